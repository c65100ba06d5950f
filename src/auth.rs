//! Who may call what: bearer tokens checked before any handler runs.
//!
//! - **Clients** come from the auth file (`GATEWAY_AUTH_FILE`, TOML): each `[[client]]` has a
//!   name, the SHA-256 of its token (never the token itself), a namespace and permissions.
//!   The file is read at start (an invalid file stops the gateway) and again whenever it
//!   changes (an invalid new version is logged and ignored: the clients stay as they were).
//! - **Authentication**: the `authorization: Bearer <token>` metadata. The presented token is
//!   hashed and compared with every client's digest in constant time; no match (or no token)
//!   is UNAUTHENTICATED. Without a token, a client certificate verified by mTLS
//!   (GATEWAY_TLS_CLIENT_CA) identifies the client whose `certificate_cn` is its subject's
//!   Common Name. Health and reflection stay open unless configured otherwise. The
//!   check runs in [`crate::service::admission`], the tower layer in front of every handler.
//! - **Authorization**: each RPC needs one [`Permission`] ([`required`]); `admin` holds them
//!   all. Checked here for unary calls and streams alike, before the handler sees the request.
//! - **Namespaces**: the client's namespace becomes its key prefix (`<namespace>:`), carried to
//!   the handlers in the request's extensions as a [`Principal`]; every key, pattern, lock,
//!   session and event goes through [`crate::redis::Namespace`], which applies and strips it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::redis::Namespace;

/// The one character the gateway puts between a namespace and a key.
pub const NAMESPACE_DELIMITER: char = ':';

/// What an RPC needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read keys and hashes.
    Read,
    /// Write keys and hashes.
    Write,
    /// Use locks.
    Lock,
    /// Use sessions.
    Session,
    /// Watch expirations.
    Watch,
    /// Everything, including server-wide monitoring.
    Admin,
}

impl Permission {
    const ALL: [Permission; 6] = [
        Permission::Read,
        Permission::Write,
        Permission::Lock,
        Permission::Session,
        Permission::Watch,
        Permission::Admin,
    ];

    /// Its name in the auth file.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Lock => "lock",
            Permission::Session => "session",
            Permission::Watch => "watch",
            Permission::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|permission| permission.name() == name)
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Any authenticated client.
    Authenticated,
    /// A client holding this permission (or admin).
    Permission(Permission),
}

/// The permission each RPC needs, by its full gRPC path; `None` for a path this gateway does
/// not serve (refused).
pub fn required(path: &str) -> Option<Requirement> {
    use Permission::*;
    let (service, method) = path.strip_prefix("/redisgateway.v1.")?.split_once('/')?;
    let permission = match (service, method) {
        ("KeyValue", "Get" | "GetMany" | "Exists" | "GetTtl" | "Scan") => Read,
        (
            "KeyValue",
            "Set" | "SetMany" | "Delete" | "Expire" | "Persist" | "Increment" | "IncrementFloat"
            | "CompareAndSwap" | "Transaction",
        ) => Write,
        ("KeyValue", "WatchExpirations") => Watch,
        ("Hash", "Get" | "GetMany" | "GetAll" | "Exists" | "Len" | "Scan") => Read,
        ("Hash", "Set" | "SetIfAbsent" | "Delete" | "Increment" | "IncrementFloat") => Write,
        ("Lock", "Acquire" | "Release" | "Extend" | "Hold" | "Inspect") => Lock,
        (
            "Session",
            "Create" | "Get" | "Update" | "Touch" | "Delete" | "ListByUser" | "DeleteByUser"
            | "Rotate" | "WatchEnded",
        ) => Session,
        ("Monitor", "Ping" | "GetHealth" | "GetGatewayStats") => {
            return Some(Requirement::Authenticated);
        }
        ("Monitor", "GetInfo" | "GetMemory" | "GetStats" | "GetClients" | "GetKeyspace") => Admin,
        _ => return None,
    };
    Some(Requirement::Permission(permission))
}

/// An authenticated caller, as handlers see it (in the request's extensions).
#[derive(Debug)]
pub struct Principal {
    /// The client's name in the auth file (for logs; never its token).
    pub name: String,
    /// Its key prefix.
    pub namespace: Namespace,
    /// Its permissions, one bit each.
    permissions: u8,
}

impl Principal {
    /// Whether it may do what `permission` covers (admin may do everything).
    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions & (permission.bit() | Permission::Admin.bit()) != 0
    }

    fn meets(&self, requirement: Requirement) -> bool {
        match requirement {
            Requirement::Authenticated => true,
            Requirement::Permission(permission) => self.allows(permission),
        }
    }
}

/// One client of the auth file.
struct Client {
    /// SHA-256 of its token, when it has one.
    digest: Option<[u8; 32]>,
    /// The Common Name of its client certificate's subject, when it may use one.
    certificate_cn: Option<String>,
    principal: Arc<Principal>,
}

/// The clients of one version of the auth file.
pub struct Clients {
    clients: Vec<Client>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    client: Vec<ClientEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    name: String,
    #[serde(default)]
    token_sha256: Option<String>,
    #[serde(default)]
    certificate_cn: Option<String>,
    namespace: String,
    permissions: Vec<String>,
}

impl Clients {
    /// Parses and checks an auth file's text; the error names the client and field at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: AuthFile = toml::from_str(text).map_err(|err| err.to_string())?;
        let mut clients: Vec<Client> = Vec::with_capacity(file.client.len());
        for (index, entry) in file.client.into_iter().enumerate() {
            let at = |field: &str| format!("client {} (`{}`) {field}", index + 1, entry.name);
            if entry.name.trim().is_empty() {
                return Err(format!("client {}: `name` must not be empty", index + 1));
            }
            let digest = match &entry.token_sha256 {
                Some(hex) => Some(parse_digest(hex).ok_or_else(|| {
                    at("`token_sha256` must be 64 hex digits (the SHA-256 of the token)")
                })?),
                None => None,
            };
            let certificate_cn = entry.certificate_cn.clone().filter(|cn| !cn.is_empty());
            if digest.is_none() && certificate_cn.is_none() {
                return Err(at("needs `token_sha256` or `certificate_cn` (or both)"));
            }
            validate_namespace(&entry.namespace)
                .map_err(|reason| at(&format!("`namespace` {reason}")))?;
            let mut permissions = 0u8;
            for name in &entry.permissions {
                let permission = Permission::parse(name).ok_or_else(|| {
                    at(&format!(
                        "`permissions`: unknown `{name}` (read, write, lock, session, watch, admin)"
                    ))
                })?;
                permissions |= permission.bit();
            }
            if permissions == 0 {
                return Err(at("`permissions` must name at least one"));
            }
            if clients
                .iter()
                .any(|client| client.principal.name == entry.name)
            {
                return Err(at("repeats a name"));
            }
            if digest.is_some() && clients.iter().any(|client| client.digest == digest) {
                return Err(at("has the same token as another client"));
            }
            if certificate_cn.is_some()
                && clients
                    .iter()
                    .any(|client| client.certificate_cn == certificate_cn)
            {
                return Err(at("has the same `certificate_cn` as another client"));
            }
            let namespace = if entry.namespace.is_empty() {
                Namespace::default()
            } else {
                Namespace::new(format!("{}{NAMESPACE_DELIMITER}", entry.namespace))
            };
            clients.push(Client {
                digest,
                certificate_cn,
                principal: Arc::new(Principal {
                    name: entry.name,
                    namespace,
                    permissions,
                }),
            });
        }
        Ok(Self { clients })
    }

    /// The client whose token is `token`. Every client's digest is compared, in constant
    /// time, whatever matches.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for client in &self.clients {
            if let Some(known) = &client.digest
                && bool::from(known.ct_eq(&digest))
            {
                found = Some(client.principal.clone());
            }
        }
        found
    }

    /// The client whose `certificate_cn` is `common_name`.
    pub fn by_certificate(&self, common_name: &str) -> Option<Arc<Principal>> {
        self.clients
            .iter()
            .find(|client| client.certificate_cn.as_deref() == Some(common_name))
            .map(|client| client.principal.clone())
    }

    /// How many clients there are.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// A namespace is empty (the whole keyspace, for operators) or 1–64 characters of
/// `A-Z a-z 0-9 _ - .`: never the delimiter `:` (so no tenant's prefix is a prefix of
/// another's), glob characters (which would widen its scans) or braces (which would override
/// Redis Cluster hash tags).
pub fn validate_namespace(namespace: &str) -> Result<(), String> {
    if namespace.len() > 64 {
        return Err("is longer than 64 characters".into());
    }
    if let Some(bad) = namespace
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "holds `{bad}`: use only letters, digits, `_`, `-` and `.` (the gateway appends `:` itself)"
        ));
    }
    Ok(())
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (index, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// The auth file's current clients, re-read when the file changes.
pub struct Auth {
    path: PathBuf,
    clients: RwLock<Arc<Clients>>,
    /// gRPC services reachable without a token (e.g. `grpc.health.v1.Health`).
    open_services: Vec<String>,
}

impl Auth {
    /// Reads the auth file at `path`; the error says what is wrong with it.
    pub fn load(path: &Path, open_services: Vec<String>) -> Result<Self, String> {
        let clients = read_clients(path)?;
        Ok(Self {
            path: path.to_owned(),
            clients: RwLock::new(Arc::new(clients)),
            open_services,
        })
    }

    /// The clients as last read.
    pub fn clients(&self) -> Arc<Clients> {
        self.clients
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the file whenever its modification time or size changes, or at once when
    /// `reload` fires (SIGHUP), until `shutdown`.
    pub async fn watch(
        self: Arc<Self>,
        reload: tokio::sync::watch::Receiver<()>,
        shutdown: CancellationToken,
    ) {
        let watched = self.clone();
        crate::reload::watch_files(vec![self.path.clone()], reload, shutdown, move || {
            match read_clients(&watched.path) {
                Ok(clients) => {
                    tracing::info!(clients = clients.len(), path = %watched.path.display(), "auth file reloaded");
                    *watched
                        .clients
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(clients);
                }
                Err(err) => tracing::error!(
                    error = %err,
                    path = %watched.path.display(),
                    "the changed auth file is invalid; keeping the clients it had"
                ),
            }
        })
        .await;
    }

    /// The caller of a request to `path` with `authorization` metadata, or the status to
    /// answer: `Ok(None)` for an open service.
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        certificate: Option<&[u8]>,
    ) -> Result<Option<Arc<Principal>>, Status> {
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        if self.open_services.iter().any(|open| open == service) {
            return Ok(None);
        }
        let token = authorization
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let principal = match (token, certificate) {
            (Some(token), _) => self
                .clients()
                .authenticate(token)
                .ok_or_else(|| Status::unauthenticated("invalid token"))?,
            (None, Some(der)) => {
                let common_name = certificate_common_name(der).ok_or_else(|| {
                    Status::unauthenticated("the client certificate's subject has no Common Name")
                })?;
                self.clients().by_certificate(&common_name).ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "no client has certificate_cn `{common_name}`, and no token was sent"
                    ))
                })?
            }
            (None, None) => {
                return Err(Status::unauthenticated(
                    "missing token: send `authorization: Bearer <token>`",
                ));
            }
        };
        let requirement = required(path)
            .ok_or_else(|| Status::permission_denied(format!("no such method: {path}")))?;
        if !principal.meets(requirement) {
            let needed = match requirement {
                Requirement::Permission(permission) => permission.name(),
                Requirement::Authenticated => "any",
            };
            return Err(Status::permission_denied(format!(
                "client `{}` lacks the `{needed}` permission {path} needs",
                principal.name
            )));
        }
        Ok(Some(principal))
    }
}

impl std::fmt::Debug for Auth {
    /// Names the file and counts the clients; never shows a digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("path", &self.path)
            .field("clients", &self.clients().len())
            .field("open_services", &self.open_services)
            .finish()
    }
}

/// The Common Name of a DER certificate's subject.
fn certificate_common_name(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(common_name)
}

fn read_clients(path: &Path) -> Result<Clients, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    Clients::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn file(entries: &[(&str, &str, &str, &str)]) -> String {
        entries
            .iter()
            .map(|(name, token, namespace, permissions)| {
                format!(
                    "[[client]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nnamespace = \"{namespace}\"\npermissions = [{permissions}]\n",
                    digest_of(token)
                )
            })
            .collect()
    }

    #[test]
    fn tokens_map_to_their_client_and_nothing_else() {
        let clients = Clients::parse(&file(&[
            ("billing", "t-billing", "billing", "\"read\", \"write\""),
            ("ops", "t-ops", "", "\"admin\""),
        ]))
        .unwrap();
        let billing = clients.authenticate("t-billing").unwrap();
        assert_eq!(billing.name, "billing");
        assert_eq!(billing.namespace.prefix(), "billing:");
        assert!(billing.allows(Permission::Write) && !billing.allows(Permission::Lock));
        let ops = clients.authenticate("t-ops").unwrap();
        assert!(ops.allows(Permission::Lock) && ops.namespace.prefix().is_empty());
        for wrong in ["", "t-billing ", "T-BILLING", "t-bill"] {
            assert!(clients.authenticate(wrong).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn bad_files_are_refused_naming_the_problem() {
        let good = ("a", "t", "ns", "\"read\"");
        for (entries, expected) in [
            (vec![("a", "t", "ns", "\"fly\"")], "unknown `fly`"),
            (vec![("a", "t", "ns", "")], "at least one"),
            (vec![("a", "t", "a:b", "\"read\"")], "`:`"),
            (vec![("a", "t", "a*", "\"read\"")], "`*`"),
            (vec![("a", "t", "{a}", "\"read\"")], "`{`"),
            (vec![good, ("a", "u", "n2", "\"read\"")], "repeats a name"),
            (vec![good, ("b", "t", "n2", "\"read\"")], "same token"),
        ] {
            let err = Clients::parse(&file(&entries)).err().expect("refused");
            assert!(err.contains(expected), "{entries:?}: {err}");
        }
        let err = Clients::parse("[[client]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\nnamespace = \"\"\npermissions = [\"read\"]\n")
            .err()
            .expect("refused");
        assert!(err.contains("64 hex digits"), "{err}");
        assert!(Clients::parse("[[client]]\nname = \"a\"\ntoken = \"plain\"\n").is_err());
    }

    #[test]
    fn every_method_of_every_service_needs_something() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = 0;
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(required(&path).is_some(), "{path} has no permission");
                    methods += 1;
                }
            }
        }
        assert!(methods > 40, "{methods} methods");
        assert_eq!(required("/redisgateway.v1.KeyValue/Nope"), None);
        assert_eq!(
            required("/redisgateway.v1.Monitor/GetInfo"),
            Some(Requirement::Permission(Permission::Admin))
        );
    }
}
