//! Where and how the gateway reaches Redis: the deployment mode (one server, a Cluster, or a
//! Sentinel-monitored primary), its nodes, the credentials and TLS.
//!
//! Two equivalent ways to say it: a URL (`REDIS_URL`: `redis://`, `redis-cluster://`,
//! `redis-sentinel://`, and their TLS forms `rediss://`, `rediss-cluster://`,
//! `rediss-sentinel://`), or explicit settings (`REDIS_MODE`, `REDIS_NODES`,
//! `REDIS_SENTINEL_SERVICE`, `REDIS_TLS`, ...). Credentials and TLS files given on their own
//! apply to either. [`fred_config`] turns them into the one fred configuration every
//! connection of the process is built from (pools, subscribers, the near cache's pair, the
//! lock WAIT connection), so every connection gets the same TLS and credentials.

use std::path::Path;
use std::sync::Arc;

use fred::prelude::ServerConfig;
use fred::types::config::{Config as FredConfig, TlsConfig, TlsConnector, TlsHostMapping};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::embedded::EmbeddedTarget;
use crate::config::{Config, RedisMode};
use crate::error::Error;

/// The port a cluster seed or standalone server listens on when a node names none.
const REDIS_PORT: u16 = 6379;
/// The port a sentinel listens on when a node names none.
const SENTINEL_PORT: u16 = 26379;

/// Builds the fred configuration from the gateway settings; `embedded_target` overrides the
/// target with the private redis-server (its unix socket and password).
pub fn fred_config(
    config: &Config,
    embedded_target: Option<&EmbeddedTarget>,
) -> Result<FredConfig, Error> {
    let mut fred = if let Some(target) = embedded_target {
        FredConfig {
            server: ServerConfig::new_unix_socket(target.socket()),
            password: Some(target.password().to_owned()),
            database: Some(config.redis_db),
            ..FredConfig::default()
        }
    } else {
        let mut fred = match &config.redis_url {
            Some(url) => FredConfig::from_url(url)
                .map_err(|err| Error::Internal(format!("REDIS_URL: {}", err.details())))?,
            None => FredConfig {
                server: explicit_server(config)?,
                database: Some(config.redis_db),
                ..FredConfig::default()
            },
        };
        // Credentials from their own variables (e.g. a mounted secret) fill what the URL lacks.
        if fred.username.is_none() {
            fred.username.clone_from(&config.redis_username);
        }
        if fred.password.is_none() {
            fred.password.clone_from(&config.redis_password);
        }
        if fred.database.is_none() && config.redis_db != 0 {
            fred.database = Some(config.redis_db);
        }
        if let ServerConfig::Sentinel {
            username, password, ..
        } = &mut fred.server
        {
            if username.is_none() {
                username.clone_from(&config.redis_sentinel_username);
            }
            if password.is_none() {
                password.clone_from(&config.redis_sentinel_password);
            }
        }
        // A rediss:// URL turns TLS on with the system's roots; the TLS settings replace
        // that with the configured trust and client certificate.
        if fred.tls.is_some() || config.redis_tls {
            fred.tls = Some(tls_config(config)?);
        }
        fred
    };
    // Keep reconnecting when Redis is down at start instead of exiting: health reports
    // NOT_SERVING until it is reachable.
    fred.fail_fast = false;
    Ok(fred)
}

/// Whether the settings turn TLS to Redis on (a `rediss` URL or REDIS_TLS).
pub fn tls_enabled(config: &Config) -> bool {
    config.redis_tls
        || config
            .redis_url
            .as_deref()
            .is_some_and(|url| url.starts_with("rediss"))
}

/// The server configuration of REDIS_MODE, REDIS_NODES and REDIS_HOST/REDIS_PORT.
fn explicit_server(config: &Config) -> Result<ServerConfig, Error> {
    let mode = config.redis_mode.unwrap_or(RedisMode::Standalone);
    let default_port = match mode {
        RedisMode::Sentinel => SENTINEL_PORT,
        RedisMode::Standalone | RedisMode::Cluster => REDIS_PORT,
    };
    let nodes = if config.redis_nodes.is_empty() {
        vec![(config.redis_host.clone(), config.redis_port)]
    } else {
        config
            .redis_nodes
            .iter()
            .map(|node| parse_node(node, default_port))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| Error::Internal(format!("REDIS_NODES: {reason}")))?
    };
    Ok(match mode {
        RedisMode::Standalone => {
            let (host, port) = nodes.into_iter().next().unwrap_or_default();
            ServerConfig::new_centralized(host, port)
        }
        RedisMode::Cluster => ServerConfig::new_clustered(nodes),
        RedisMode::Sentinel => {
            let service = config.redis_sentinel_service.clone().ok_or_else(|| {
                Error::Internal("REDIS_SENTINEL_SERVICE is required in sentinel mode".into())
            })?;
            ServerConfig::new_sentinel(nodes, service)
        }
    })
}

/// Parses one `host:port` (or `host`, meaning `default_port`) of REDIS_NODES; an IPv6
/// address goes in brackets (`[::1]:6379`).
pub fn parse_node(node: &str, default_port: u16) -> Result<(String, u16), String> {
    let node = node.trim();
    let (host, port) = if let Some(rest) = node.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{node}`: an IPv6 address needs a closing `]`"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("`{node}` is not host:port")),
        }
    } else {
        match node.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (node, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{node}` names no host"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("`{node}`: the port must be between 1 and 65535"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

/// The TLS client configuration: the CA bundle of REDIS_TLS_CA (or the system's roots), and
/// the client certificate of REDIS_TLS_CERT / REDIS_TLS_KEY when Redis asks for one.
fn tls_config(config: &Config) -> Result<TlsConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &config.redis_tls_ca {
        Some(ca) => {
            let certificates = read_certificates(ca, "REDIS_TLS_CA")?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(tls_error(
                    "REDIS_TLS_CA",
                    ca,
                    "holds no usable CA certificate",
                ));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(Error::Internal(
                    "TLS to Redis: the system has no CA certificates (install ca-certificates) \
                     and REDIS_TLS_CA names none"
                        .into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Internal(format!("TLS to Redis: {err}")))?
        .with_root_certificates(roots);
    let client = match (&config.redis_tls_cert, &config.redis_tls_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certificates(cert, "REDIS_TLS_CERT")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                tls_error("REDIS_TLS_KEY", key, &format!("no private key: {err}"))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| Error::Internal(format!("REDIS_TLS_CERT / REDIS_TLS_KEY: {err}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConfig {
        connector: TlsConnector::from(client),
        hostnames: TlsHostMapping::None,
    })
}

/// Every certificate of a PEM file; an error names the setting when there is none.
fn read_certificates(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|err| tls_error(setting, path, &format!("cannot be read as PEM: {err}")))?;
    if certificates.is_empty() {
        return Err(tls_error(setting, path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

fn tls_error(setting: &str, path: &Path, problem: &str) -> Error {
    Error::Internal(format!("{setting} ({}) {problem}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_parse_with_default_ports_and_ipv6() {
        assert_eq!(parse_node("a:1", 9), Ok(("a".into(), 1)));
        assert_eq!(parse_node(" cache ", 9), Ok(("cache".into(), 9)));
        assert_eq!(parse_node("[::1]:7000", 9), Ok(("::1".into(), 7000)));
        assert_eq!(parse_node("[::1]", 9), Ok(("::1".into(), 9)));
        for bad in ["", ":1", "a:0", "a:x", "[::1", "[::1]x"] {
            assert!(parse_node(bad, 9).is_err(), "{bad:?}");
        }
    }
}
