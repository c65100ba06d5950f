//! What Redis says about itself: `INFO` read per node, parsed into sections of fields, with
//! typed views of the sections the Monitor service reports (server, memory, stats, clients,
//! keyspace).
//!
//! Parsing is lenient on purpose: managed Redis offerings hide some fields and every release
//! adds others, so a field a server does not report reads as absent, and the typed views
//! count it as 0 (or empty) instead of failing the call. Raw values stay available for
//! Monitor.GetInfo, which passes them on unparsed.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{Server, ServerConfig};
use fred::types::{ClusterHash, CustomCommand};

use super::{Call, Redis, on_node};
use crate::error::{Error, Idempotency};

/// Fields by name, as one INFO section lists them.
pub type Fields = BTreeMap<String, String>;

/// One node's INFO reply, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// Sections by lower-case name (`# Server` is `server`), each with its fields.
    sections: BTreeMap<String, Fields>,
}

/// The INFO of one Redis node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's address, `host:port` (a unix socket's path).
    pub address: String,
    /// What it reported.
    pub info: Info,
}

/// How the gateway reaches Redis, from its client configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server (TCP or unix socket).
    Standalone,
    /// A Redis Cluster.
    Cluster,
    /// A primary found through Sentinel.
    Sentinel,
}

impl Info {
    /// Parses an INFO reply: `# Name` lines open a section, `field:value` lines fill it
    /// (values may themselves contain `:`), anything else is skipped. Fields before any
    /// header go to a section named `""`.
    pub fn parse(text: &str) -> Self {
        let mut sections = BTreeMap::new();
        let mut current = String::new();
        for line in text.lines().map(str::trim) {
            if let Some(header) = line.strip_prefix('#') {
                current = header.trim().to_ascii_lowercase();
                sections.entry(current.clone()).or_insert_with(Fields::new);
            } else if let Some((field, value)) = line.split_once(':') {
                sections
                    .entry(current.clone())
                    .or_insert_with(Fields::new)
                    .insert(field.to_owned(), value.to_owned());
            }
        }
        Self { sections }
    }

    /// Every section with its fields.
    pub fn sections(&self) -> &BTreeMap<String, Fields> {
        &self.sections
    }

    /// Every section with its fields, by value.
    pub fn into_sections(self) -> BTreeMap<String, Fields> {
        self.sections
    }

    /// The raw value of `field`, in whichever section holds it (INFO field names are unique
    /// across sections).
    pub fn field(&self, field: &str) -> Option<&str> {
        self.sections
            .values()
            .find_map(|fields| fields.get(field))
            .map(String::as_str)
    }

    /// `field` as an unsigned integer.
    pub fn u64(&self, field: &str) -> Option<u64> {
        self.field(field)?.trim().parse().ok()
    }

    /// `field` as a number.
    pub fn f64(&self, field: &str) -> Option<f64> {
        self.field(field)?
            .trim()
            .parse()
            .ok()
            .filter(|number: &f64| number.is_finite())
    }

    /// The server section's figures.
    pub fn server(&self) -> ServerInfo {
        ServerInfo {
            version: self.field("redis_version").unwrap_or_default().to_owned(),
            run_id: self.field("run_id").unwrap_or_default().to_owned(),
            uptime: Duration::from_secs(self.u64("uptime_in_seconds").unwrap_or(0)),
        }
    }

    /// The memory section's figures.
    pub fn memory(&self) -> MemoryInfo {
        MemoryInfo {
            used: self.u64("used_memory").unwrap_or(0),
            peak: self.u64("used_memory_peak").unwrap_or(0),
            rss: self.u64("used_memory_rss").unwrap_or(0),
            max: self.u64("maxmemory").unwrap_or(0),
            policy: self
                .field("maxmemory_policy")
                .unwrap_or_default()
                .to_owned(),
            fragmentation_ratio: self.f64("mem_fragmentation_ratio").unwrap_or(0.0),
        }
    }

    /// The stats section's figures.
    pub fn stats(&self) -> StatsInfo {
        StatsInfo {
            commands_processed: self.u64("total_commands_processed").unwrap_or(0),
            ops_per_sec: self.f64("instantaneous_ops_per_sec").unwrap_or(0.0),
            hits: self.u64("keyspace_hits").unwrap_or(0),
            misses: self.u64("keyspace_misses").unwrap_or(0),
            expired: self.u64("expired_keys").unwrap_or(0),
            evicted: self.u64("evicted_keys").unwrap_or(0),
        }
    }

    /// The clients section's figures.
    pub fn clients(&self) -> ClientsInfo {
        ClientsInfo {
            connected: self.u64("connected_clients").unwrap_or(0),
            blocked: self.u64("blocked_clients").unwrap_or(0),
            max: self.u64("maxclients").unwrap_or(0),
        }
    }

    /// The keyspace section: one entry per non-empty database, by ascending index. Lines
    /// that do not read as `dbN:keys=…,expires=…,avg_ttl=…` are skipped.
    pub fn keyspace(&self) -> Vec<KeyspaceDb> {
        let Some(fields) = self.sections.get("keyspace") else {
            return Vec::new();
        };
        let mut databases: Vec<KeyspaceDb> = fields
            .iter()
            .filter_map(|(name, value)| KeyspaceDb::parse(name, value))
            .collect();
        databases.sort_by_key(|database| database.db);
        databases
    }
}

/// Figures from INFO server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis_version`, e.g. "7.0.15".
    pub version: String,
    /// `run_id`: changes when the server restarts (and its counters start again).
    pub run_id: String,
    /// `uptime_in_seconds`.
    pub uptime: Duration,
}

/// Figures from INFO memory.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryInfo {
    /// Bytes allocated for data (`used_memory`).
    pub used: u64,
    /// Highest `used` since start (`used_memory_peak`).
    pub peak: u64,
    /// Resident bytes as the OS sees them (`used_memory_rss`).
    pub rss: u64,
    /// The limit (`maxmemory`); 0 means none.
    pub max: u64,
    /// What Redis does at the limit (`maxmemory_policy`).
    pub policy: String,
    /// `mem_fragmentation_ratio`.
    pub fragmentation_ratio: f64,
}

impl MemoryInfo {
    /// `used` as a share of `max`, 0 to 1 (or above when over the limit); `None` without a
    /// limit.
    pub fn share_of_limit(&self) -> Option<f64> {
        (self.max > 0).then(|| self.used as f64 / self.max as f64)
    }
}

/// Figures from INFO stats; counters run since the server started.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsInfo {
    /// `total_commands_processed`.
    pub commands_processed: u64,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: f64,
    /// Successful key lookups (`keyspace_hits`).
    pub hits: u64,
    /// Failed key lookups (`keyspace_misses`).
    pub misses: u64,
    /// Keys removed when their TTL ran out (`expired_keys`).
    pub expired: u64,
    /// Keys removed to stay under maxmemory (`evicted_keys`).
    pub evicted: u64,
}

impl StatsInfo {
    /// hits / (hits + misses).
    pub fn hit_ratio(&self) -> f64 {
        hit_ratio(self.hits, self.misses)
    }
}

/// hits / (hits + misses), 0 to 1; 0 when nothing was looked up.
pub fn hit_ratio(hits: u64, misses: u64) -> f64 {
    let lookups = hits as f64 + misses as f64;
    if lookups == 0.0 {
        0.0
    } else {
        hits as f64 / lookups
    }
}

/// Figures from INFO clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientsInfo {
    /// Open client connections, replicas excluded (`connected_clients`).
    pub connected: u64,
    /// Clients in blocking commands (`blocked_clients`).
    pub blocked: u64,
    /// The connection limit (`maxclients`).
    pub max: u64,
}

/// One `dbN` line of INFO keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyspaceDb {
    /// The database index N.
    pub db: u32,
    /// Number of keys.
    pub keys: u64,
    /// Number of keys with a TTL.
    pub expires: u64,
    /// Redis's estimate of the average remaining TTL of keys with a TTL; `None` when it
    /// reports 0 (no key has a TTL, or its expiry cycle has not sampled them yet).
    pub avg_ttl: Option<Duration>,
}

impl KeyspaceDb {
    /// Reads `db3` / `keys=10,expires=2,avg_ttl=5000` (later versions add fields, which are
    /// ignored).
    fn parse(name: &str, value: &str) -> Option<Self> {
        let db = name.strip_prefix("db")?.parse().ok()?;
        let mut keys = None;
        let mut expires = 0;
        let mut avg_ttl_ms = 0;
        for pair in value.split(',') {
            match pair.split_once('=')? {
                ("keys", count) => keys = Some(count.parse().ok()?),
                ("expires", count) => expires = count.parse().ok()?,
                ("avg_ttl", millis) => avg_ttl_ms = millis.parse().ok()?,
                _ => {}
            }
        }
        Some(Self {
            db,
            keys: keys?,
            expires,
            avg_ttl: (avg_ttl_ms > 0).then(|| Duration::from_millis(avg_ttl_ms)),
        })
    }
}

/// A node address for reports: `host:port`, or the path of a unix socket.
fn describe(server: &Server) -> String {
    if server.port == 0 {
        server.host.to_string()
    } else {
        server.to_string()
    }
}

impl Redis {
    /// INFO with `sections` (none: Redis's default sections) from every node the gateway
    /// serves from: each primary of a cluster, else the one server. Section names are passed
    /// as given; the caller validates them.
    pub async fn info(&self, call: &Call, sections: &[&str]) -> Result<Vec<NodeInfo>, Error> {
        if self.clustered() {
            let primaries = self.primaries();
            if primaries.is_empty() {
                return Err(Error::redis_unreachable());
            }
            let mut nodes = Vec::with_capacity(primaries.len());
            for primary in &primaries {
                let text = self
                    .run(call, Idempotency::Idempotent, |client| {
                        let args: Vec<String> =
                            sections.iter().map(|&name| name.to_owned()).collect();
                        let client = on_node(client, Some(primary));
                        async move {
                            client
                                .custom::<String, _>(
                                    CustomCommand::new_static("INFO", ClusterHash::Random, false),
                                    args,
                                )
                                .await
                        }
                    })
                    .await?;
                nodes.push(NodeInfo {
                    address: describe(primary),
                    info: Info::parse(&text),
                });
            }
            return Ok(nodes);
        }
        let configured = self.configured_address();
        let (address, text) = self
            .run(call, Idempotency::Idempotent, |client| {
                let args: Vec<String> = sections.iter().map(|&name| name.to_owned()).collect();
                let configured = configured.clone();
                async move {
                    let address = client
                        .active_connections()
                        .first()
                        .map(describe)
                        .unwrap_or(configured);
                    let text = client
                        .custom::<String, _>(
                            CustomCommand::new_static("INFO", ClusterHash::Random, false),
                            args,
                        )
                        .await?;
                    Ok((address, text))
                }
            })
            .await?;
        Ok(vec![NodeInfo {
            address,
            info: Info::parse(&text),
        }])
    }

    /// How the gateway reaches Redis.
    pub fn topology(&self) -> Topology {
        match self.pool.client_config().server {
            ServerConfig::Clustered { .. } => Topology::Cluster,
            ServerConfig::Sentinel { .. } => Topology::Sentinel,
            _ => Topology::Standalone,
        }
    }

    /// The address the configuration names, for when no connection is up to tell.
    fn configured_address(&self) -> String {
        match self.pool.client_config().server {
            ServerConfig::Centralized { server } => describe(&server),
            ServerConfig::Unix { path } => path.display().to_string(),
            ServerConfig::Clustered { hosts, .. } | ServerConfig::Sentinel { hosts, .. } => {
                hosts.iter().map(describe).collect::<Vec<_>>().join(",")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n\
        executable:/usr/bin/redis-server\r\nconfig_file:\r\nuptime_in_seconds:42\r\n\r\n\
        # Clients\r\nconnected_clients:3\r\nmaxclients:10000\r\nblocked_clients:1\r\n\r\n\
        # Memory\r\nused_memory:1000\r\nused_memory_rss:3000\r\nused_memory_peak:2000\r\n\
        maxmemory:4000\r\nmaxmemory_policy:allkeys-lru\r\nmem_fragmentation_ratio:3.00\r\n\r\n\
        # Stats\r\ntotal_commands_processed:99\r\ninstantaneous_ops_per_sec:7\r\n\
        expired_keys:5\r\nevicted_keys:0\r\nkeyspace_hits:3\r\nkeyspace_misses:1\r\n\r\n\
        # Keyspace\r\ndb10:keys=4,expires=0,avg_ttl=0\r\n\
        db0:keys=10,expires=2,avg_ttl=5000,subexpiry=0\r\n";

    #[test]
    fn sections_and_fields_are_parsed_with_raw_values() {
        let info = Info::parse(REPLY);
        let names: Vec<&str> = info.sections().keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["clients", "keyspace", "memory", "server", "stats"],
            "lower-case section names"
        );
        assert_eq!(info.field("executable"), Some("/usr/bin/redis-server"));
        assert_eq!(info.field("config_file"), Some(""));
        assert_eq!(
            info.sections()["keyspace"]["db0"],
            "keys=10,expires=2,avg_ttl=5000,subexpiry=0"
        );
        assert_eq!(info.field("missing"), None);
        assert_eq!(Info::parse(""), Info::default());
    }

    #[test]
    fn typed_views_read_their_fields() {
        let info = Info::parse(REPLY);
        assert_eq!(info.server().version, "7.0.15");
        assert_eq!(info.server().uptime, Duration::from_secs(42));
        let memory = info.memory();
        assert_eq!((memory.used, memory.peak, memory.rss), (1000, 2000, 3000));
        assert_eq!(memory.max, 4000);
        assert_eq!(memory.policy, "allkeys-lru");
        assert_eq!(memory.share_of_limit(), Some(0.25));
        assert_eq!(memory.fragmentation_ratio, 3.0);
        let stats = info.stats();
        assert_eq!(stats.commands_processed, 99);
        assert_eq!(stats.ops_per_sec, 7.0);
        assert_eq!(stats.hit_ratio(), 0.75);
        assert_eq!((stats.expired, stats.evicted), (5, 0));
        assert_eq!(
            info.clients(),
            ClientsInfo {
                connected: 3,
                blocked: 1,
                max: 10000
            }
        );
        assert_eq!(
            info.keyspace(),
            [
                KeyspaceDb {
                    db: 0,
                    keys: 10,
                    expires: 2,
                    avg_ttl: Some(Duration::from_secs(5))
                },
                KeyspaceDb {
                    db: 10,
                    keys: 4,
                    expires: 0,
                    avg_ttl: None
                },
            ]
        );
    }

    #[test]
    fn missing_fields_read_as_zero() {
        let info = Info::parse("# Stats\r\nkeyspace_hits:oops\r\n");
        assert_eq!(info.stats().hits, 0);
        assert_eq!(info.stats().hit_ratio(), 0.0);
        assert_eq!(info.memory().share_of_limit(), None);
        assert!(info.keyspace().is_empty());
        assert_eq!(info.server().version, "");
    }

    #[test]
    fn hit_ratio_is_zero_without_lookups() {
        assert_eq!(hit_ratio(0, 0), 0.0);
        assert_eq!(hit_ratio(0, 5), 0.0);
        assert_eq!(hit_ratio(5, 0), 1.0);
        assert_eq!(hit_ratio(u64::MAX, u64::MAX), 0.5);
    }
}
