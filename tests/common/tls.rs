//! TLS material and credentials for secured test Redis deployments: a certificate authority, a
//! server certificate for `127.0.0.1` and `localhost` and a client certificate it signed, and a
//! second, unrelated authority (for clients that must refuse the server), written as PEM files
//! into a temporary directory once per test process.
//!
//! A secured test Redis (see [`super::RedisServer::start_secured`]) serves TLS on a port of its
//! own (client certificates optional unless a test asks for `--tls-auth-clients yes`) beside
//! the plain port the fixtures administer it through, and has two ACL users: `default` with
//! [`ADMIN_PASSWORD`] (fixtures, replication, sentinels) and [`GATEWAY_USER`] with
//! [`GATEWAY_PASSWORD`] (the gateway). A connection that skipped authentication gets NOAUTH.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The `default` user's password on a secured test Redis.
pub const ADMIN_PASSWORD: &str = "admin-secret";
/// The ACL user the gateway logs in as.
pub const GATEWAY_USER: &str = "gateway";
/// Its password.
pub const GATEWAY_PASSWORD: &str = "gateway-secret";
/// The password of secured test sentinels (their `requirepass`).
pub const SENTINEL_PASSWORD: &str = "sentinel-secret";

/// PEM files of the test authorities and certificates.
pub struct TlsFiles {
    /// The authority that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server certificate (SANs `localhost`, `127.0.0.1`) and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// An authority that signed nothing here.
    pub other_ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsFiles {
    /// The process's test TLS material, made on first use.
    pub fn shared() -> &'static TlsFiles {
        static FILES: OnceLock<TlsFiles> = OnceLock::new();
        FILES.get_or_init(TlsFiles::generate)
    }

    fn generate() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca_cert, ca_key) = authority("redis-gateway test CA");
        let issuer = Issuer::new(ca_cert.1, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf("redis-test-server");
        let (client_cert, client_key) = leaf("redis-gateway-client");
        let (other_ca, _) = authority("an unrelated CA");
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", &ca_cert.0),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            other_ca: write("other-ca.pem", &other_ca.0),
            _dir: dir,
        }
    }

    /// redis-server arguments that serve TLS on `tls_port` with these certificates.
    pub fn redis_args(&self, tls_port: u16) -> Vec<String> {
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&self.server_cert),
            "--tls-key-file".into(),
            path(&self.server_key),
            "--tls-ca-cert-file".into(),
            path(&self.ca),
            "--tls-auth-clients".into(),
            "optional".into(),
        ]
    }

    /// redis-cli arguments for a TLS connection with the client certificate.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            path(&self.ca),
            "--cert".into(),
            path(&self.client_cert),
            "--key".into(),
            path(&self.client_key),
        ]
    }

    /// The gateway's flags to trust the test authority (TLS on).
    pub fn gateway_args(&self) -> Vec<String> {
        vec![
            "--redis-tls".into(),
            "--redis-tls-ca".into(),
            path(&self.ca),
        ]
    }

    /// The gateway's flags to present the client certificate.
    pub fn gateway_client_cert_args(&self) -> Vec<String> {
        vec![
            "--redis-tls-cert".into(),
            path(&self.client_cert),
            "--redis-tls-key".into(),
            path(&self.client_key),
        ]
    }
}

/// redis-server arguments for the two ACL users of a secured test Redis.
pub fn acl_args() -> Vec<String> {
    vec![
        "--requirepass".into(),
        ADMIN_PASSWORD.into(),
        // One argument per rule: redis-server joins them into the `user` directive.
        "--user".into(),
        GATEWAY_USER.into(),
        "on".into(),
        format!(">{GATEWAY_PASSWORD}"),
        "~*".into(),
        "&*".into(),
        "+@all".into(),
    ]
}

/// A new authority and a server certificate it signed for `localhost` and `127.0.0.1`, as
/// PEM: (the authority's certificate, the server certificate, its key).
pub fn new_server_identity(authority_name: &str) -> (String, String, String) {
    let (ca_cert, ca_key) = authority(authority_name);
    let issuer = Issuer::new(ca_cert.1, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "gateway-test-server");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (ca_cert.0, cert.pem(), key.serialize_pem())
}

/// A self-signed authority: its (PEM, parameters) and key.
fn authority(name: &str) -> ((String, CertificateParams), KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-sign");
    ((cert.pem(), params), key)
}

fn path(path: &Path) -> String {
    path.display().to_string()
}
