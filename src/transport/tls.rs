//! The gRPC port's TLS: the certificate chain and key of GATEWAY_TLS_CERT / GATEWAY_TLS_KEY
//! and, for mTLS, the client CA bundle of GATEWAY_TLS_CLIENT_CA, read from their files at
//! start and read again when one of them changes (checked every 2 s) or on SIGHUP.
//!
//! A reload never drops a connection: each handshake takes the configuration current at that
//! moment, and a connection keeps the certificate it was opened with. A changed set that
//! does not load (a half-written file, a key that does not match its certificate) is logged
//! and ignored; the gateway keeps serving the last good one. Bad files at start stop the
//! gateway instead (exit code 2), before anything listens.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The files the gRPC port's TLS comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// GATEWAY_TLS_CERT: the certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// GATEWAY_TLS_KEY: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// GATEWAY_TLS_CLIENT_CA: when set, every client must present a certificate that
    /// chains to one of these (PEM bundle).
    pub client_ca: Option<PathBuf>,
}

/// The gRPC port's TLS configuration, replaced whole when its files change.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads `files`; an error names the setting and the file at fault.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let config = build(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Whether clients must present a certificate (mTLS).
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor for the next handshake, with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }

    /// Reads the files again and, when they load, serves them to the next handshakes.
    pub fn reload(&self) -> Result<(), String> {
        let config = build(&self.files)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    /// Reloads when a file's modification time or size changes, or at once when `reload`
    /// fires (SIGHUP), until `shutdown`.
    pub async fn watch(
        self: Arc<Self>,
        reload: tokio::sync::watch::Receiver<()>,
        shutdown: CancellationToken,
    ) {
        let paths = [Some(&self.files.cert), Some(&self.files.key)]
            .into_iter()
            .chain(std::iter::once(self.files.client_ca.as_ref()))
            .flatten()
            .cloned()
            .collect();
        let watched = self.clone();
        crate::reload::watch_files(paths, reload, shutdown, move || match watched.reload() {
            Ok(()) => tracing::info!(
                cert = %watched.files.cert.display(),
                "TLS certificate reloaded; new connections get it, open ones keep theirs"
            ),
            Err(err) => tracing::error!(
                error = %err,
                "the changed TLS files do not load; serving the certificate loaded before"
            ),
        })
        .await;
    }
}

/// The server configuration `files` describe: TLS 1.2 and 1.3 (ring), ALPN `h2` only, and
/// client certificates required when a client CA is named.
fn build(files: &TlsFiles) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, "GATEWAY_TLS_CERT")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| {
        format!(
            "GATEWAY_TLS_KEY ({}) holds no usable private key: {err}",
            files.key.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) =
                roots.add_parsable_certificates(certificates(ca, "GATEWAY_TLS_CLIENT_CA")?);
            if added == 0 {
                return Err(format!(
                    "GATEWAY_TLS_CLIENT_CA ({}) holds no usable CA certificate",
                    ca.display()
                ));
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|err| format!("GATEWAY_TLS_CLIENT_CA ({}): {err}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|err| format!("GATEWAY_TLS_CERT / GATEWAY_TLS_KEY: {err}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Every certificate of a PEM file; an error names the setting when there is none.
fn certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            format!(
                "{setting} ({}) cannot be read as PEM: {err}",
                path.display()
            )
        })?;
    if certificates.is_empty() {
        return Err(format!(
            "{setting} ({}) holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certificates)
}
