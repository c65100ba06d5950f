//! The Monitor service: read-only views of Redis and of the gateway for dashboards, probes and
//! operators. Each handler reads INFO (or PINGs) through [`Redis`](crate::redis::Redis), maps
//! the typed figures of every node to its response, and aggregates them over the nodes (one
//! node for now; the per-node lists are there for Redis Cluster).
//!
//! GetHealth never fails because Redis is down (it answers NOT_SERVING with the reason), and
//! GetGatewayStats needs no Redis at all; the other RPCs fail as every call does when Redis is
//! unreachable (UNAVAILABLE).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::{Context, duration};
use crate::error::Error;
use crate::pb;
use crate::pb::monitor_get_health_response::{Mode, Status as HealthStatus};
use crate::pb::monitor_server::Monitor;
use crate::redis::info::{NodeInfo, Topology, hit_ratio};
use crate::redis::near_cache::NearCacheSnapshot;
use crate::redis::server_info::RedisVersion;

/// Used memory at or above this share of `maxmemory` makes GetHealth DEGRADED.
const MEMORY_WARNING_SHARE: f64 = 0.9;
/// Client connections at or above this share of `maxclients` make GetHealth DEGRADED.
const CLIENTS_WARNING_SHARE: f64 = 0.9;
/// How long GetHealth stays DEGRADED after it saw a node's `evicted_keys` rise: long enough
/// that every probe polling at a usual period sees it, not so long that one burst of
/// evictions hides a recovery.
const EVICTION_WARNING_PERIOD: Duration = Duration::from_secs(60);
/// Longest INFO section name GetInfo accepts (the real ones are far shorter).
const MAX_SECTION_BYTES: usize = 64;

/// Serves `redisgateway.v1.Monitor`.
#[derive(Clone)]
pub struct MonitorService {
    /// The pool, limits and shared state.
    context: Context,
}

impl MonitorService {
    /// A Monitor service over `context`.
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    /// The health verdict from every node's INFO.
    fn assess(&self, nodes: &[NodeInfo]) -> pb::MonitorGetHealthResponse {
        let now = Instant::now();
        let mut warnings = Vec::new();
        let mut versions = Vec::new();
        let mut uptime: Option<Duration> = None;
        let (mut clients, mut used_memory, mut ops_per_sec) = (0, 0, 0.0);
        let (mut hits, mut misses) = (0u64, 0u64);
        for node in nodes {
            let (server, memory, stats) =
                (node.info.server(), node.info.memory(), node.info.stats());
            let connected = node.info.clients();
            if let Some(share) = memory.share_of_limit()
                && share >= MEMORY_WARNING_SHARE
            {
                warnings.push(format!(
                    "{}: used memory is {:.0}% of maxmemory ({} of {} bytes; policy {})",
                    node.address,
                    share * 100.0,
                    memory.used,
                    memory.max,
                    memory.policy
                ));
            }
            if self.context.shared.evictions.observe(
                &node.address,
                &server.run_id,
                stats.evicted,
                now,
            ) {
                warnings.push(format!(
                    "{}: Redis is evicting keys to stay under maxmemory (evicted_keys {} rose \
                     within the last {}s; policy {})",
                    node.address,
                    stats.evicted,
                    EVICTION_WARNING_PERIOD.as_secs(),
                    memory.policy
                ));
            }
            if connected.max > 0
                && connected.connected as f64 >= connected.max as f64 * CLIENTS_WARNING_SHARE
            {
                warnings.push(format!(
                    "{}: {} client connections of at most {} (maxclients)",
                    node.address, connected.connected, connected.max
                ));
            }
            versions.push(server.version);
            uptime = Some(uptime.map_or(server.uptime, |shortest| shortest.min(server.uptime)));
            clients += connected.connected;
            used_memory += memory.used;
            ops_per_sec += stats.ops_per_sec;
            hits = hits.saturating_add(stats.hits);
            misses = misses.saturating_add(stats.misses);
        }
        let status = if warnings.is_empty() {
            HealthStatus::Serving
        } else {
            HealthStatus::Degraded
        };
        pb::MonitorGetHealthResponse {
            status: status.into(),
            warnings,
            redis_version: lowest_version(versions),
            mode: mode(self.context.redis.topology()).into(),
            uptime: uptime.map(duration),
            connected_clients: clients,
            used_memory,
            ops_per_sec,
            hit_ratio: hit_ratio(hits, misses),
        }
    }
}

/// What GetHealth remembers between checks to tell whether Redis is evicting now: per node,
/// the last `evicted_keys` seen and when it last rose. Shared by every runtime, so each probe
/// sees a rise that another probe's check recorded.
#[derive(Debug, Default)]
pub struct EvictionWatch {
    /// By node address.
    nodes: Mutex<HashMap<String, EvictionSample>>,
}

/// One node's last `evicted_keys`.
#[derive(Debug)]
struct EvictionSample {
    /// The server's `run_id`: when it changes, Redis restarted and its counters with it.
    run_id: String,
    /// `evicted_keys` at the last check.
    evicted: u64,
    /// When a check last saw it rise.
    rose_at: Option<Instant>,
}

impl EvictionWatch {
    /// Records `evicted` for the node at `address` and tells whether its evictions rose
    /// within [`EVICTION_WARNING_PERIOD`]. On the first look at a server (or after it
    /// restarted) any eviction since its start counts as a rise seen now, since when it
    /// happened is unknown.
    fn observe(&self, address: &str, run_id: &str, evicted: u64, now: Instant) -> bool {
        // The map stays valid whatever a panicking holder did: each entry is replaced whole.
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sample = nodes
            .entry(address.to_owned())
            .or_insert_with(|| EvictionSample {
                run_id: String::new(),
                evicted: 0,
                rose_at: None,
            });
        if sample.run_id != run_id {
            sample.run_id = run_id.to_owned();
            sample.evicted = 0;
            sample.rose_at = None;
        }
        if evicted > sample.evicted {
            sample.rose_at = Some(now);
        }
        sample.evicted = evicted;
        sample
            .rose_at
            .is_some_and(|at| now.duration_since(at) < EVICTION_WARNING_PERIOD)
    }
}

/// The lowest of the nodes' versions (as versions, not strings; unreadable ones last).
fn lowest_version(versions: Vec<String>) -> String {
    versions
        .into_iter()
        .min_by_key(|version| {
            RedisVersion::parse(version).map_or((1, None), |parsed| (0, Some(parsed)))
        })
        .unwrap_or_default()
}

/// The API's name for how the gateway reaches Redis.
fn mode(topology: Topology) -> Mode {
    match topology {
        Topology::Standalone => Mode::Standalone,
        Topology::Cluster => Mode::Cluster,
        Topology::Sentinel => Mode::Sentinel,
    }
}

/// Why Redis could not be asked, for GetHealth's warnings (never internal details).
fn unreachable_warning(err: &Error) -> String {
    let reason = match err {
        Error::Unavailable { message, .. } => message.clone(),
        Error::DeadlineExceeded { .. } => "it did not answer before the call's deadline".into(),
        Error::ShuttingDown => "the gateway is shutting down".into(),
        Error::Internal(details) => {
            tracing::warn!(%details, "GetHealth could not read INFO");
            "it sent an unexpected reply; the gateway log has the details".into()
        }
        other => other.to_string(),
    };
    format!("Redis is unreachable: {reason}")
}

/// An INFO section name: empty (Redis's default sections) or one word of letters, digits and
/// `_`, so that nothing but a section name reaches Redis. Returned in lower case.
fn info_section(section: &str) -> Result<Option<String>, Error> {
    if section.is_empty() {
        return Ok(None);
    }
    if section.len() > MAX_SECTION_BYTES {
        return Err(Error::invalid(
            "section",
            format!(
                "is {} bytes; an INFO section name is at most {MAX_SECTION_BYTES}",
                section.len()
            ),
        ));
    }
    if !section
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    {
        return Err(Error::invalid(
            "section",
            "must be one INFO section name (letters, digits and `_`), e.g. \"memory\", or empty \
             for the default sections",
        ));
    }
    Ok(Some(section.to_ascii_lowercase()))
}

/// The same value if every item has it, else the default (e.g. one eviction policy).
fn common<T: PartialEq + Default>(mut values: impl Iterator<Item = T>) -> T {
    let Some(first) = values.next() else {
        return T::default();
    };
    if values.all(|value| value == first) {
        first
    } else {
        T::default()
    }
}

/// Non-empty databases summed over nodes, by ascending index; `avg_ttl` weighted by the
/// `expires` of the nodes that report an estimate.
fn sum_databases(
    nodes: &[pb::monitor_get_keyspace_response::Node],
) -> Vec<pb::monitor_get_keyspace_response::Database> {
    use pb::monitor_get_keyspace_response::Database;
    #[derive(Default)]
    struct Sum {
        keys: u64,
        expires: u64,
        /// Sum of avg_ttl (ms) × expires, and of those expires, over nodes with an estimate.
        weighted_ttl_ms: u128,
        weight: u128,
    }
    let mut sums: BTreeMap<u32, Sum> = BTreeMap::new();
    for database in nodes.iter().flat_map(|node| &node.databases) {
        let sum = sums.entry(database.db).or_default();
        sum.keys += database.keys;
        sum.expires += database.expires;
        if let Some(ttl) = &database.avg_ttl {
            let millis = u128::try_from(ttl.seconds).unwrap_or(0) * 1000
                + u128::try_from(ttl.nanos).unwrap_or(0) / 1_000_000;
            sum.weighted_ttl_ms += millis * u128::from(database.expires);
            sum.weight += u128::from(database.expires);
        }
    }
    sums.into_iter()
        .map(|(db, sum)| Database {
            db,
            keys: sum.keys,
            expires: sum.expires,
            avg_ttl: (sum.weight > 0).then(|| {
                let millis = sum.weighted_ttl_ms / sum.weight;
                duration(Duration::from_millis(
                    u64::try_from(millis).unwrap_or(u64::MAX),
                ))
            }),
        })
        .collect()
}

#[tonic::async_trait]
impl Monitor for MonitorService {
    async fn ping(
        &self,
        request: Request<pb::MonitorPingRequest>,
    ) -> Result<Response<pb::MonitorPingResponse>, Status> {
        let call = self.context.call(&request);
        let latency = self.context.redis.round_trip(&call).await?;
        Ok(Response::new(pb::MonitorPingResponse {
            latency: Some(duration(latency)),
        }))
    }

    async fn get_health(
        &self,
        request: Request<pb::MonitorGetHealthRequest>,
    ) -> Result<Response<pb::MonitorGetHealthResponse>, Status> {
        let not_serving = |warning: String| pb::MonitorGetHealthResponse {
            status: HealthStatus::NotServing.into(),
            warnings: vec![warning],
            ..Default::default()
        };
        if self.context.shared.shutdown.is_cancelled() {
            return Ok(Response::new(not_serving(
                "the gateway is draining for shutdown; use another instance".into(),
            )));
        }
        let call = self.context.call(&request);
        let sections = ["server", "clients", "memory", "stats"];
        let response = match self.context.redis.info(&call, &sections).await {
            Ok(nodes) => self.assess(&nodes),
            // Redis answered, but the gateway's user may not run INFO.
            Err(Error::PermissionDenied(_)) => pb::MonitorGetHealthResponse {
                status: HealthStatus::Degraded.into(),
                warnings: vec![
                    "the gateway's Redis user may not run INFO, so memory, evictions and clients \
                     are not checked; grant it +info"
                        .into(),
                ],
                mode: mode(self.context.redis.topology()).into(),
                ..Default::default()
            },
            Err(err) => not_serving(unreachable_warning(&err)),
        };
        Ok(Response::new(response))
    }

    async fn get_info(
        &self,
        request: Request<pb::MonitorGetInfoRequest>,
    ) -> Result<Response<pb::MonitorGetInfoResponse>, Status> {
        let call = self.context.call(&request);
        let section = info_section(&request.get_ref().section)?;
        let sections: Vec<&str> = section.as_deref().into_iter().collect();
        let nodes = self.context.redis.info(&call, &sections).await?;
        let nodes = nodes
            .into_iter()
            .map(|node| pb::monitor_get_info_response::Node {
                address: node.address,
                sections: node
                    .info
                    .into_sections()
                    .into_iter()
                    .map(|(name, fields)| {
                        let fields = fields.into_iter().collect();
                        (name, pb::monitor_get_info_response::Section { fields })
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::MonitorGetInfoResponse { nodes }))
    }

    async fn get_memory(
        &self,
        request: Request<pb::MonitorGetMemoryRequest>,
    ) -> Result<Response<pb::MonitorGetMemoryResponse>, Status> {
        use pb::monitor_get_memory_response::Node;
        let call = self.context.call(&request);
        let nodes: Vec<Node> = self
            .context
            .redis
            .info(&call, &["memory"])
            .await?
            .into_iter()
            .map(|node| {
                let memory = node.info.memory();
                Node {
                    address: node.address,
                    used_memory: memory.used,
                    used_memory_peak: memory.peak,
                    used_memory_rss: memory.rss,
                    max_memory: memory.max,
                    max_memory_policy: memory.policy,
                    fragmentation_ratio: memory.fragmentation_ratio,
                }
            })
            .collect();
        let used_memory: u64 = nodes.iter().map(|node| node.used_memory).sum();
        let used_memory_rss: u64 = nodes.iter().map(|node| node.used_memory_rss).sum();
        let max_memory = if nodes.iter().any(|node| node.max_memory == 0) {
            0
        } else {
            nodes.iter().map(|node| node.max_memory).sum()
        };
        Ok(Response::new(pb::MonitorGetMemoryResponse {
            used_memory,
            used_memory_peak: nodes.iter().map(|node| node.used_memory_peak).sum(),
            used_memory_rss,
            max_memory,
            max_memory_policy: common(nodes.iter().map(|node| node.max_memory_policy.clone())),
            fragmentation_ratio: if used_memory == 0 {
                0.0
            } else {
                used_memory_rss as f64 / used_memory as f64
            },
            nodes,
        }))
    }

    async fn get_stats(
        &self,
        request: Request<pb::MonitorGetStatsRequest>,
    ) -> Result<Response<pb::MonitorGetStatsResponse>, Status> {
        use pb::monitor_get_stats_response::Node;
        let call = self.context.call(&request);
        let nodes: Vec<Node> = self
            .context
            .redis
            .info(&call, &["stats"])
            .await?
            .into_iter()
            .map(|node| {
                let stats = node.info.stats();
                Node {
                    address: node.address,
                    commands_processed: stats.commands_processed,
                    ops_per_sec: stats.ops_per_sec,
                    hits: stats.hits,
                    misses: stats.misses,
                    hit_ratio: stats.hit_ratio(),
                    expired: stats.expired,
                    evicted: stats.evicted,
                }
            })
            .collect();
        let hits = nodes.iter().map(|node| node.hits).sum();
        let misses = nodes.iter().map(|node| node.misses).sum();
        Ok(Response::new(pb::MonitorGetStatsResponse {
            commands_processed: nodes.iter().map(|node| node.commands_processed).sum(),
            ops_per_sec: nodes.iter().map(|node| node.ops_per_sec).sum(),
            hits,
            misses,
            hit_ratio: hit_ratio(hits, misses),
            expired: nodes.iter().map(|node| node.expired).sum(),
            evicted: nodes.iter().map(|node| node.evicted).sum(),
            nodes,
        }))
    }

    async fn get_clients(
        &self,
        request: Request<pb::MonitorGetClientsRequest>,
    ) -> Result<Response<pb::MonitorGetClientsResponse>, Status> {
        use pb::monitor_get_clients_response::Node;
        let call = self.context.call(&request);
        let nodes: Vec<Node> = self
            .context
            .redis
            .info(&call, &["clients"])
            .await?
            .into_iter()
            .map(|node| {
                let clients = node.info.clients();
                Node {
                    address: node.address,
                    connected_clients: clients.connected,
                    blocked_clients: clients.blocked,
                    max_clients: clients.max,
                }
            })
            .collect();
        Ok(Response::new(pb::MonitorGetClientsResponse {
            connected_clients: nodes.iter().map(|node| node.connected_clients).sum(),
            blocked_clients: nodes.iter().map(|node| node.blocked_clients).sum(),
            max_clients: nodes.iter().map(|node| node.max_clients).sum(),
            nodes,
        }))
    }

    async fn get_keyspace(
        &self,
        request: Request<pb::MonitorGetKeyspaceRequest>,
    ) -> Result<Response<pb::MonitorGetKeyspaceResponse>, Status> {
        use pb::monitor_get_keyspace_response::{Database, Node};
        let call = self.context.call(&request);
        let nodes: Vec<Node> = self
            .context
            .redis
            .info(&call, &["keyspace"])
            .await?
            .into_iter()
            .map(|node| Node {
                databases: node
                    .info
                    .keyspace()
                    .into_iter()
                    .map(|database| Database {
                        db: database.db,
                        keys: database.keys,
                        expires: database.expires,
                        avg_ttl: database.avg_ttl.map(duration),
                    })
                    .collect(),
                address: node.address,
            })
            .collect();
        Ok(Response::new(pb::MonitorGetKeyspaceResponse {
            databases: sum_databases(&nodes),
            nodes,
        }))
    }

    async fn get_gateway_stats(
        &self,
        _request: Request<pb::MonitorGetGatewayStatsRequest>,
    ) -> Result<Response<pb::MonitorGetGatewayStatsResponse>, Status> {
        let stats = &self.context.shared.stats;
        let redis = &self.context.shared.redis_stats;
        let pools = redis.pool_connections();
        Ok(Response::new(pb::MonitorGetGatewayStatsResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime: Some(duration(stats.started_at.elapsed())),
            pool_size: u32::try_from(pools.configured).unwrap_or(u32::MAX),
            pool_connected: u32::try_from(pools.connected).unwrap_or(u32::MAX),
            // This call is one of them; it is not reported.
            in_flight_calls: stats.in_flight_calls().saturating_sub(1),
            reconnects: redis.reconnects(),
            expiry_subscribers: stats.expiry_subscribers.load(Ordering::Relaxed),
            events_delivered: stats.events_delivered.load(Ordering::Relaxed),
            events_dropped: stats.events_dropped.load(Ordering::Relaxed),
            near_cache: Some(near_cache_stats(self.context.shared.near_cache.snapshot())),
        }))
    }
}

/// The near cache's counters as Monitor reports them.
fn near_cache_stats(snapshot: NearCacheSnapshot) -> pb::NearCacheStats {
    pb::NearCacheStats {
        enabled: snapshot.enabled,
        tracking: snapshot.tracking,
        entries: snapshot.entries,
        bytes: snapshot.bytes,
        hits: snapshot.hits,
        misses: snapshot.misses,
        invalidations: snapshot.invalidations,
        flushes: snapshot.flushes,
        evictions: snapshot.evictions,
        fills_discarded: snapshot.fills_discarded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names_are_single_words() {
        assert_eq!(info_section("").unwrap(), None);
        assert_eq!(info_section("Memory").unwrap().as_deref(), Some("memory"));
        assert_eq!(
            info_section("commandstats").unwrap().as_deref(),
            Some("commandstats")
        );
        for bad in [
            "memory stats",
            "all\r\nFLUSHALL",
            "a-b",
            "é",
            &"x".repeat(65),
        ] {
            let err = info_section(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument { field, .. } if field == "section"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn evictions_warn_after_a_rise_for_a_while() {
        let watch = EvictionWatch::default();
        let start = Instant::now();
        assert!(!watch.observe("a:1", "run1", 0, start));
        assert!(!watch.observe("a:1", "run1", 0, start));
        assert!(watch.observe("a:1", "run1", 5, start));
        let later = start + EVICTION_WARNING_PERIOD / 2;
        assert!(
            watch.observe("a:1", "run1", 5, later),
            "still within the period"
        );
        let much_later = start + EVICTION_WARNING_PERIOD * 2;
        assert!(
            !watch.observe("a:1", "run1", 5, much_later),
            "no rise since"
        );
        // A restarted server starts counting again; its first evictions are a rise.
        assert!(!watch.observe("a:1", "run2", 0, much_later));
        assert!(watch.observe("a:1", "run2", 1, much_later));
        // A server first seen with evictions: when they happened is unknown.
        assert!(watch.observe("b:1", "run3", 7, much_later));
    }

    #[test]
    fn the_lowest_version_wins_as_a_version() {
        assert_eq!(
            lowest_version(vec!["7.10.0".into(), "7.2.4".into()]),
            "7.2.4"
        );
        assert_eq!(lowest_version(vec!["?".into(), "7.0.15".into()]), "7.0.15");
        assert_eq!(lowest_version(Vec::new()), "");
    }

    #[test]
    fn keyspace_sums_weight_avg_ttl_by_expires() {
        use pb::monitor_get_keyspace_response::{Database, Node};
        let database = |db, keys, expires, ttl_ms: Option<u64>| Database {
            db,
            keys,
            expires,
            avg_ttl: ttl_ms.map(|ms| duration(Duration::from_millis(ms))),
        };
        let nodes = [
            Node {
                address: "a:1".into(),
                databases: vec![database(0, 10, 1, Some(1000)), database(2, 1, 0, None)],
            },
            Node {
                address: "b:1".into(),
                databases: vec![database(0, 5, 3, Some(5000))],
            },
        ];
        assert_eq!(
            sum_databases(&nodes),
            [database(0, 15, 4, Some(4000)), database(2, 1, 0, None)]
        );
    }

    #[test]
    fn a_common_value_or_the_default() {
        assert_eq!(common(["lru", "lru"].into_iter()), "lru");
        assert_eq!(common(["lru", "lfu"].into_iter()), "");
        assert_eq!(common(std::iter::empty::<&str>()), "");
    }
}
