//! TLS on the gRPC port (GATEWAY_TLS_CERT, GATEWAY_TLS_KEY) and client certificates
//! (GATEWAY_TLS_CLIENT_CA): a client that trusts the gateway's CA is served; a plaintext
//! client and one trusting another CA are refused; with mTLS a client without a certificate is
//! refused and one with a certificate the CA signed is served; with an auth file, such a
//! certificate's subject names its client (`certificate_cn`) when no token is sent.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::tls::TlsFiles;
use common::{Gateway, RedisServer, unique_key};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How a test client connects.
enum Client {
    Plaintext,
    /// TLS trusting `ca`, presenting the client certificate when `with_certificate`.
    Tls {
        ca: &'static std::path::Path,
        with_certificate: bool,
    },
}

/// A channel to the gateway at `gateway` as `client`; `Err` when it cannot be made or the
/// first call fails.
async fn served(gateway: &Gateway, client: Client) -> Result<(), String> {
    let port = gateway.addr.port();
    let channel = match client {
        Client::Plaintext => Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .map_err(|err| err.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|err| format!("connect: {err:?}"))?,
        Client::Tls {
            ca,
            with_certificate,
        } => {
            let files = TlsFiles::shared();
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("CA")))
                .domain_name("localhost");
            if with_certificate {
                tls = tls.identity(Identity::from_pem(
                    std::fs::read(&files.client_cert).expect("client cert"),
                    std::fs::read(&files.client_key).expect("client key"),
                ));
            }
            Channel::from_shared(format!("https://127.0.0.1:{port}"))
                .map_err(|err| err.to_string())?
                .tls_config(tls)
                .map_err(|err| format!("TLS config: {err:?}"))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(2))
                .connect()
                .await
                .map_err(|err| format!("connect: {err:?}"))?
        }
    };
    let key = unique_key("tls");
    let mut kv = KeyValueClient::new(channel);
    kv.set(pb::KeyValueSetRequest {
        key: key.clone(),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    })
    .await
    .map_err(|status| format!("Set: {status:?}"))?;
    let read = kv
        .get(pb::KeyValueGetRequest {
            key,
            ..Default::default()
        })
        .await
        .map_err(|status| format!("Get: {status:?}"))?
        .into_inner();
    assert_eq!(read.value, "v");
    Ok(())
}

/// Starts a gateway serving TLS with the test server certificate (and `extra` flags), and
/// waits until it serves, asking over TLS.
async fn start_tls_gateway(redis: &RedisServer, extra: &[&str]) -> Gateway {
    let files = TlsFiles::shared();
    let cert = files.server_cert.display().to_string();
    let key = files.server_key.display().to_string();
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    let gateway = Gateway::start_unchecked(&redis.url(), &args).await;
    let port = gateway.addr.port();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&files.ca).expect("CA")))
        .domain_name("localhost");
    tls = tls.identity(Identity::from_pem(
        std::fs::read(&files.client_cert).expect("client cert"),
        std::fs::read(&files.client_key).expect("client key"),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = async {
            let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
                .ok()?
                .tls_config(tls.clone())
                .ok()?
                .connect()
                .await
                .ok()?;
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .ok()?;
            Some(reply.into_inner().status())
        }
        .await;
        if status == Some(ServingStatus::Serving) {
            return gateway;
        }
        assert!(Instant::now() < deadline, "the TLS gateway never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_that_trust_the_ca_are_served_and_others_are_refused() {
    let redis = RedisServer::start();
    let gateway = start_tls_gateway(&redis, &[]).await;
    let files = TlsFiles::shared();
    served(
        &gateway,
        Client::Tls {
            ca: &files.ca,
            with_certificate: false,
        },
    )
    .await
    .expect("a client trusting the CA is served");
    let plaintext = served(&gateway, Client::Plaintext).await;
    assert!(plaintext.is_err(), "a plaintext client was served");
    let wrong_ca = served(
        &gateway,
        Client::Tls {
            ca: &files.other_ca,
            with_certificate: false,
        },
    )
    .await;
    assert!(wrong_ca.is_err(), "a client trusting another CA was served");
    // The refusals did not hurt the server.
    served(
        &gateway,
        Client::Tls {
            ca: &files.ca,
            with_certificate: false,
        },
    )
    .await
    .expect("still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_required_only_a_client_with_one_is_served() {
    let redis = RedisServer::start();
    let files = TlsFiles::shared();
    let client_ca = files.ca.display().to_string();
    let gateway = start_tls_gateway(&redis, &["--tls-client-ca", &client_ca]).await;
    let without = served(
        &gateway,
        Client::Tls {
            ca: &files.ca,
            with_certificate: false,
        },
    )
    .await;
    assert!(
        without.is_err(),
        "a client without a certificate was served"
    );
    served(
        &gateway,
        Client::Tls {
            ca: &files.ca,
            with_certificate: true,
        },
    )
    .await
    .expect("a client with a certificate the CA signed is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_client_certificate_names_its_auth_file_entry() {
    let redis = RedisServer::start();
    let files = TlsFiles::shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let auth_file = dir.path().join("clients.toml");
    // The test client certificate's subject is CN=redis-gateway-client.
    std::fs::write(
        &auth_file,
        "[[client]]\nname = \"service-by-certificate\"\ncertificate_cn = \"redis-gateway-client\"\n\
         namespace = \"mtls\"\npermissions = [\"read\", \"write\"]\n",
    )
    .expect("write the auth file");
    let client_ca = files.ca.display().to_string();
    let auth = auth_file.display().to_string();
    let gateway = start_tls_gateway(
        &redis,
        &["--tls-client-ca", &client_ca, "--auth-file", &auth],
    )
    .await;
    served(
        &gateway,
        Client::Tls {
            ca: &files.ca,
            with_certificate: true,
        },
    )
    .await
    .expect("the certificate's client is served without a token");
    // Its keys went to its namespace.
    let admin = redis.client().await;
    let keys: Vec<String> = admin
        .custom(fred::cmd!("KEYS"), vec!["*"])
        .await
        .expect("KEYS");
    assert!(
        !keys.is_empty() && keys.iter().all(|key| key.starts_with("mtls:")),
        "{keys:?}"
    );
}

/// A KeyValue client over a new TLS connection to `gateway` that trusts only `ca` (PEM);
/// `Err` when the handshake fails.
async fn connect_trusting(gateway: &Gateway, ca: &str) -> Result<KeyValueClient<Channel>, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", gateway.addr.port()))
        .map_err(|err| err.to_string())?
        .tls_config(tls)
        .map_err(|err| format!("TLS config: {err:?}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|err| format!("connect: {err:?}"))?;
    Ok(KeyValueClient::new(channel))
}

/// One Set on `kv`.
async fn set_once(kv: &mut KeyValueClient<Channel>) -> Result<(), String> {
    kv.set(pb::KeyValueSetRequest {
        key: unique_key("reload"),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    })
    .await
    .map(drop)
    .map_err(|status| format!("Set: {status:?}"))
}

/// Waits until a new connection trusting `ca` is served (within `within`).
async fn served_trusting(gateway: &Gateway, ca: &str, within: Duration) -> KeyValueClient<Channel> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = match connect_trusting(gateway, ca).await {
            Ok(mut kv) => set_once(&mut kv).await.map(|()| kv),
            Err(err) => Err(err),
        };
        match attempt {
            Ok(kv) => return kv,
            Err(err) => assert!(
                Instant::now() < deadline,
                "not served within {within:?}: {err}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a gateway serving TLS with the certificate and key files `cert` and `key`.
async fn start_serving_files(
    redis: &RedisServer,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Gateway {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    Gateway::start_unchecked(&redis.url(), &["--tls-cert", &cert, "--tls-key", &key]).await
}

/// Writes `text` to `path` the way certificate managers do: a new file renamed over the old.
fn replace_file(path: &std::path::Path, text: &str) {
    let new = path.with_extension("new");
    std::fs::write(&new, text).expect("write");
    std::fs::rename(&new, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_to_new_connections_and_open_ones_keep_theirs() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (first_ca, first_cert, first_key) = common::tls::new_server_identity("first CA");
    std::fs::write(&cert, &first_cert).expect("write");
    std::fs::write(&key, &first_key).expect("write");
    let gateway = start_serving_files(&redis, &cert, &key).await;
    let mut before = served_trusting(&gateway, &first_ca, Duration::from_secs(10)).await;

    let (second_ca, second_cert, second_key) = common::tls::new_server_identity("second CA");
    replace_file(&key, &second_key);
    replace_file(&cert, &second_cert);
    // The files are checked every 2 s.
    served_trusting(&gateway, &second_ca, Duration::from_secs(6)).await;
    assert!(
        connect_trusting(&gateway, &first_ca).await.is_err(),
        "a new connection still got the replaced certificate"
    );
    // The connection made before the reload is still open and served (a new one would
    // need the first CA's certificate, which is gone).
    for _ in 0..3 {
        set_once(&mut before)
            .await
            .expect("the connection opened before the reload is still served");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_even_when_the_files_look_unchanged() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = common::tls::new_server_identity("first CA");
    let second = common::tls::new_server_identity("second CA");
    // Both sets padded to the same sizes (PEM readers skip text outside the blocks), so that
    // only the contents differ.
    let pad = |a: &str, b: &str| {
        let size = a.len().max(b.len());
        (format!("{a:<size$}"), format!("{b:<size$}"))
    };
    let (first_cert, second_cert) = pad(&first.1, &second.1);
    let (first_key, second_key) = pad(&first.2, &second.2);
    std::fs::write(&cert, &first_cert).expect("write");
    std::fs::write(&key, &first_key).expect("write");
    let gateway = start_serving_files(&redis, &cert, &key).await;
    served_trusting(&gateway, &first.0, Duration::from_secs(10)).await;

    // New contents in place, sizes and modification times as before: the periodic check
    // cannot see the change.
    for (path, text) in [(&cert, &second_cert), (&key, &second_key)] {
        let modified = std::fs::metadata(path)
            .expect("stat")
            .modified()
            .expect("mtime");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write");
        file.set_modified(modified)
            .expect("restore the modification time");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        connect_trusting(&gateway, &second.0).await.is_err(),
        "reloaded without SIGHUP: the test cannot tell the two ways apart"
    );
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGHUP)
        .expect("SIGHUP");
    served_trusting(&gateway, &second.0, Duration::from_secs(2)).await;
    assert!(connect_trusting(&gateway, &first.0).await.is_err());
}
