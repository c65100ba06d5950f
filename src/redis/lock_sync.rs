//! Locks that survive a failover: an acquisition is granted only once a replica has it.
//!
//! Replication is asynchronous: a primary that dies right after granting a lock may not have
//! sent it to its replica, and the replica promoted in its place would grant the same lock to a
//! second holder (and hand out a fencing token again). So, when the primary has replicas, the
//! acquisition script runs on a dedicated connection followed by `WAIT <n> <timeout>` on that
//! same connection, which returns how many replicas have every write the connection made. When
//! fewer than required confirm in time, the gateway releases the lock again and tells the
//! caller (UNAVAILABLE, outcome known): nothing is granted that a failover could lose.
//!
//! The dedicated connection keeps WAIT, which blocks the connection it is sent on, away from
//! the pools' pipelines; it is made only once a primary reports a replica (`INFO
//! replication`, read every second for `auto`: wait for one replica whenever one is
//! connected). On a Redis Cluster, WAIT is per node: the replica counts are read from every
//! primary, the dedicated connection is a cluster client (one connection per node), and WAIT
//! goes to the node that ran the script, where it counts that node's replicas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::Config as FredConfig;
use tokio_util::sync::CancellationToken;

use super::fanout::dedicated_client;
use super::slots::node_name;
use super::{Call, Namespace, Redis, on_node};
use crate::error::{Error, Idempotency};

/// How many replicas must confirm a lock acquisition (GATEWAY_LOCK_REPLICA_ACKS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaAcks {
    /// One, whenever the primary has a replica connected; none otherwise.
    Auto,
    /// Exactly this many (0: never wait).
    Count(u32),
}

impl std::str::FromStr for ReplicaAcks {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "auto" => Ok(Self::Auto),
            number => number
                .parse::<u32>()
                .ok()
                .filter(|count| *count <= 16)
                .map(Self::Count)
                .ok_or_else(|| format!("`{text}` is neither `auto` nor a count from 0 to 16")),
        }
    }
}

/// The process's replica-confirmed lock acquisitions.
#[derive(Debug)]
pub struct LockSync {
    /// What to wait for.
    acks: ReplicaAcks,
    /// Longest wait for the replicas.
    timeout: Duration,
    /// Replicas the primary reported connected, as last read (on a single Redis or Sentinel).
    replicas: AtomicU64,
    /// On a cluster: replicas each primary (`host:port`) reported connected, as last read.
    replicas_by_node: Mutex<HashMap<String, u64>>,
    /// The dedicated connection, once made.
    client: OnceLock<Client>,
    /// Acquisitions released again because too few replicas confirmed them.
    pub undone: AtomicU64,
}

impl LockSync {
    /// Waits for `acks` replicas, up to `timeout`, once [`LockSync::run`] has its connection.
    pub fn new(acks: ReplicaAcks, timeout: Duration) -> Self {
        Self {
            acks,
            timeout,
            replicas: AtomicU64::new(0),
            replicas_by_node: Mutex::new(HashMap::new()),
            client: OnceLock::new(),
            undone: AtomicU64::new(0),
        }
    }

    /// Never waits (tools and tests that need a [`super::Redis`] without it).
    pub fn disabled() -> Self {
        Self::new(ReplicaAcks::Count(0), Duration::ZERO)
    }

    /// Replicas an acquisition must wait for now (0: none), on a single Redis or the primary
    /// Sentinel names.
    pub fn required(&self) -> u32 {
        self.required_given(self.replicas.load(Ordering::Relaxed))
    }

    /// Replicas an acquisition on cluster primary `node` must wait for now (0: none).
    pub fn required_on(&self, node: &Server) -> u32 {
        let replicas = self
            .replicas_by_node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&node_name(node))
            .copied()
            .unwrap_or(0);
        self.required_given(replicas)
    }

    fn required_given(&self, replicas: u64) -> u32 {
        match self.acks {
            ReplicaAcks::Count(count) => count,
            ReplicaAcks::Auto => u32::from(replicas > 0),
        }
    }

    /// Whether any acquisition must wait now.
    fn any_required(&self) -> bool {
        match self.acks {
            ReplicaAcks::Count(count) => count > 0,
            ReplicaAcks::Auto => {
                self.replicas.load(Ordering::Relaxed) > 0
                    || self
                        .replicas_by_node
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .values()
                        .any(|count| *count > 0)
            }
        }
    }

    /// Longest wait for the replicas.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The dedicated connection, when made.
    pub fn client(&self) -> Option<&Client> {
        self.client.get()
    }

    /// Reads the primary's (each cluster primary's) replica count every second through `redis`
    /// (the pool) until `shutdown`, and makes the dedicated connection (reconnecting forever)
    /// once waits are due: a Redis without replicas never gets one. Returns at once when it
    /// never waits.
    pub async fn run(
        &self,
        redis: Redis,
        fred: FredConfig,
        timeout: Duration,
        shutdown: CancellationToken,
    ) {
        if self.acks == ReplicaAcks::Count(0) {
            return;
        }
        let mut connection = None;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if redis.clustered() {
                self.read_cluster_replicas(&redis, timeout).await;
            } else {
                let call = Call::new(None, timeout, Namespace::default());
                let info = redis
                    .run(&call, Idempotency::Idempotent, |client| async move {
                        client
                            .custom::<String, _>(fred::cmd!("INFO"), vec!["replication"])
                            .await
                    })
                    .await;
                if let Some(count) = info.ok().as_deref().and_then(connected_replicas) {
                    self.replicas.store(count, Ordering::Relaxed);
                }
            }
            if connection.is_none() && self.any_required() {
                match dedicated_client(&fred, timeout, 16) {
                    Ok(client) => {
                        let task = client.connect();
                        let _ = tokio::time::timeout(timeout, client.wait_for_connect()).await;
                        connection = Some((task, client));
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "replica-confirmed locks disabled");
                        return;
                    }
                }
            }
            // Handed to acquisitions once connected (on a cluster: with its slot map), so
            // that none is sent on a connection still being made.
            if let Some((_, client)) = &connection
                && self.client.get().is_none()
                && client.is_connected()
            {
                let _ = self.client.set(client.clone());
            }
        }
        if let Some(client) = self.client.get() {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
        }
        if let Some((connection, _)) = connection {
            connection.abort();
        }
    }
}

impl LockSync {
    /// Reads every cluster primary's replica count (`INFO replication` on each, at once).
    async fn read_cluster_replicas(&self, redis: &Redis, timeout: Duration) {
        let reads = redis.primaries().into_iter().map(|node| async move {
            let call = Call::new(None, timeout, Namespace::default());
            let info = redis
                .run(&call, Idempotency::Idempotent, |client| {
                    let node = node.clone();
                    async move {
                        on_node(client, Some(&node))
                            .custom::<String, _>(fred::cmd!("INFO"), vec!["replication"])
                            .await
                    }
                })
                .await;
            (node_name(&node), info)
        });
        let mut counts = HashMap::new();
        let previous = self
            .replicas_by_node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (node, info) in futures_util::future::join_all(reads).await {
            // Unreadable now: keep the last count, so that a slow node is not taken for one
            // without replicas.
            let count = info
                .ok()
                .as_deref()
                .and_then(connected_replicas)
                .or_else(|| previous.get(&node).copied());
            if let Some(count) = count {
                counts.insert(node, count);
            }
        }
        *self
            .replicas_by_node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = counts;
    }
}

/// `connected_slaves` from an `INFO replication` text.
fn connected_replicas(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix("connected_slaves:"))
        .and_then(|count| count.trim().parse().ok())
}

/// The error for an acquisition that too few replicas confirmed: `released` says whether the
/// gateway could release it again.
pub fn unconfirmed(acked: i64, required: u32, timeout: Duration, released: bool) -> Error {
    let confirmed = format!(
        "the lock was granted but {acked} of {required} required replicas confirmed it within \
         {timeout:?} (GATEWAY_LOCK_REPLICA_ACKS)"
    );
    if released {
        Error::Unavailable {
            message: format!(
                "{confirmed}; it was released again, so a failover cannot hand it to a second \
                 holder; retry"
            ),
            outcome_unknown: false,
        }
    } else {
        Error::Unavailable {
            message: format!(
                "{confirmed}, and releasing it again failed: it stays held, by no caller, until \
                 its lease ends"
            ),
            outcome_unknown: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse_auto_or_a_small_count() {
        assert_eq!("auto".parse(), Ok(ReplicaAcks::Auto));
        assert_eq!("2".parse(), Ok(ReplicaAcks::Count(2)));
        assert!("17".parse::<ReplicaAcks>().is_err() && "x".parse::<ReplicaAcks>().is_err());
    }

    #[test]
    fn auto_waits_for_one_replica_only_when_one_is_connected() {
        let sync = LockSync::new(ReplicaAcks::Auto, Duration::from_millis(100));
        assert_eq!(sync.required(), 0);
        sync.replicas.store(2, Ordering::Relaxed);
        assert_eq!(sync.required(), 1);
        assert_eq!(
            connected_replicas("# Replication\r\nrole:master\r\nconnected_slaves:3\r\n"),
            Some(3)
        );
    }
}
