//! The Redis layer: the fred connection pool and how every command is run through it.
//!
//! - [`Redis::run`] sends one command with the call's time budget, never replays a write
//!   (fred's `max_command_attempts` default of 3 would apply an INCR twice after a reconnect),
//!   fails fast with UNAVAILABLE when no connection is up, and classifies errors.
//! - [`Redis::eval`] runs a Lua [`Script`] by EVALSHA, loading it on NOSCRIPT.
//! - Typed operations, one module per data type, each a set of `impl Redis` methods that take
//!   a [`Call`] and plain values: [`strings`] (KeyValue), [`hashes`] (Hash), [`sessions`]
//!   (Session), [`locks`] (Lock), [`transaction`] (KeyValue's guarded transactions), [`scan`]
//!   (cursor scans, streamed in pages).
//! - [`wakeups`]: the process's one pub/sub subscription, which wakes lock waiters.
//! - [`expiry`]: the key-event feed behind WatchExpirations (one elected writer records
//!   keyspace events into a capped stream; every process reads it); [`keyspace`]: the
//!   notify-keyspace-events flags it needs; [`glob`]: Redis' glob matching; [`fanout`]: the
//!   per-process reader of such a stream and its local watchers, shared with
//!   [`session_endings`]: the feed behind Session.WatchEnded, filled by [`session_sweeper`]
//!   (an index of deadlines and explicit endings, swept by one elected process into a capped
//!   stream).
//! - [`near_cache`]: KeyValue reads served from memory, kept coherent by client tracking;
//!   [`lock_sync`]: lock acquisitions confirmed by a replica (WAIT) before they are granted;
//!   [`slots`]: Redis Cluster slots (which multi-key calls are split, which refused).
//! - [`info`]: INFO per node, parsed into sections and typed views (Monitor).
//! - [`stats`]: failed commands by kind, reconnects and pool state, for the whole process.
//! - [`keys`]: key naming for every service (namespaces, the reserved internal key space,
//!   cluster hash tags). [`call`]: the per-call budget. [`scripts`]: Lua. [`server_info`]:
//!   the version check at connect. [`embedded`]: the supervised private redis-server.
//!   [`target`]: where and how to reach Redis (mode, nodes, credentials, TLS).
//!
//! Nothing here knows gRPC: services map requests to these calls and results to messages.

pub mod call;
pub mod embedded;
pub mod expiry;
pub mod fanout;
pub mod glob;
pub mod hashes;
pub mod info;
pub mod keys;
pub mod keyspace;
pub mod lock_sync;
pub mod locks;
pub mod near_cache;
pub mod scan;
pub mod scripts;
pub mod server_info;
pub mod session_endings;
pub mod session_sweeper;
pub mod sessions;
pub mod slots;
pub mod stats;
pub mod strings;
pub mod target;
pub mod transaction;
pub mod wakeups;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fred::clients::{Pool, WithOptions};
use fred::error::Error as RedisError;
use fred::prelude::*;
use fred::types::config::{Config as FredConfig, TcpConfig};
use fred::types::{MultipleKeys, Value};
use tokio::sync::{broadcast, watch};

use crate::config::Config;
use crate::error::{Error, Idempotency};
pub use call::{Budget, Call, Operands};
pub use keys::Namespace;
pub use lock_sync::LockSync;
pub use near_cache::NearCache;
pub use scripts::Script;
use stats::CommandErrorKind;
pub use stats::RedisStats;
pub use target::fred_config;

/// The gateway's connection to Redis. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Redis {
    /// Connections that pipeline concurrent commands (fred auto-pipelines).
    pool: Pool,
    /// Longest time one command may take when the client's deadline is later.
    command_timeout: Duration,
    /// Retry idempotent reads once after a timeout or a dropped connection.
    retry_reads: bool,
    /// What the gateway saw of each pooled connection, to fail fast during an outage.
    links: Arc<Links>,
    /// The process's Redis counters (failed commands, reconnects, pools).
    stats: Arc<RedisStats>,
    /// The process's near cache (KeyValue reads that ask for it; writes drop their keys).
    near_cache: Arc<NearCache>,
    /// Whether Redis is a cluster (multi-key commands must stay within one slot).
    clustered: bool,
    /// Replica-confirmed lock acquisitions (the process's dedicated connection).
    lock_sync: Arc<LockSync>,
}

/// fred reports a client as connected until its first reconnect attempt starts, and commands
/// sent in that window wait for their timeout. The gateway hears of the failure earlier (the
/// connection's error event), so it tracks each connection itself.
struct Links {
    /// Per pooled client: when it last reported a connection error (ms since `epoch`), or 0
    /// once it has reconnected.
    failed_at: Vec<AtomicU64>,
    /// Per pooled client: bumped on every connection error, so that calls waiting on that
    /// connection stop waiting (fred would hold them until a reconnect or their timeout).
    failures: Vec<watch::Sender<u64>>,
    /// Start of the clock `failed_at` counts in.
    epoch: Instant,
    /// Round-robin position.
    next: AtomicUsize,
    /// Whether a connection error sidelines the whole pooled client: on a single Redis (or the
    /// primary Sentinel names) it does. A cluster client talks to every primary, and an error
    /// concerns one node: fred fails that node's commands fast by itself (`fail_fast`), while
    /// the other shards keep serving.
    client_wide_failures: bool,
}

/// After this long, fred's own connection state is trusted again over an error event (the
/// stale window is one reconnect delay; an error that did not drop the link must not
/// sideline a working connection for long).
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

impl Links {
    fn now_ms(&self) -> u64 {
        // Never 0, which means "no failure".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Tracks client `index`'s connection events (`errors`, `connects`) until the client is
    /// dropped, and counts its reconnects in `stats`. Unlike fred's `on_error` helpers, a
    /// lagging receiver does not end the tracking.
    async fn follow(
        self: Arc<Self>,
        index: usize,
        mut errors: broadcast::Receiver<(RedisError, Option<Server>)>,
        mut connects: broadcast::Receiver<Server>,
        stats: Arc<RedisStats>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        // fred announces the first connection as it does a reconnect.
        let mut connected_before = false;
        loop {
            tokio::select! {
                event = errors.recv() => match event {
                    Ok((error, server)) => {
                        tracing::debug!(%error, ?server, "Redis connection error");
                        // The cluster lost a slot's every server: its nodes refuse every
                        // command until it recovers (the health probe sees when).
                        if error.details().starts_with(CLUSTER_DOWN) {
                            stats.set_cluster_down(true);
                        }
                        if self.client_wide_failures {
                            self.mark_failed(index);
                        }
                    }
                    Err(RecvError::Lagged(_)) if self.client_wide_failures => {
                        self.mark_failed(index)
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                event = connects.recv() => match event {
                    Ok(server) => {
                        tracing::debug!(%server, "Redis connection established");
                        self.failed_at[index].store(0, Ordering::Relaxed);
                        if connected_before {
                            stats.reconnected(1);
                        }
                        connected_before = true;
                    }
                    // Missed events: fred's own state is the judge again.
                    Err(RecvError::Lagged(missed)) => {
                        self.failed_at[index].store(0, Ordering::Relaxed);
                        stats.reconnected(missed.saturating_sub(u64::from(!connected_before)));
                        connected_before = true;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    fn mark_failed(&self, index: usize) {
        self.failed_at[index].store(self.now_ms(), Ordering::Relaxed);
        self.failures[index].send_modify(|count| *count += 1);
    }

    fn usable(&self, index: usize, client: &Client) -> bool {
        // A cluster client reports itself disconnected while any one node reconnects; its
        // commands to the nodes that are up still work, and those to a node that is down fail
        // fast in fred (`fail_fast`).
        if !self.client_wide_failures {
            return true;
        }
        if !client.is_connected() {
            return false;
        }
        let failed_at = self.failed_at[index].load(Ordering::Relaxed);
        failed_at == 0 || self.now_ms() - failed_at > FAILURE_MEMORY.as_millis() as u64
    }
}

impl Redis {
    /// Builds a pool of `connections` on the current runtime and starts connecting. Waits up
    /// to the connect timeout for the first connection; if Redis is not reachable by then the
    /// gateway still starts (health is NOT_SERVING) and fred keeps reconnecting with
    /// exponential backoff. The pool counts its failures and reconnects in `stats`.
    pub async fn connect(
        config: &Config,
        fred: FredConfig,
        connections: usize,
        stats: Arc<RedisStats>,
        near_cache: Arc<NearCache>,
        lock_sync: Arc<LockSync>,
    ) -> Result<Self, Error> {
        let connect_timeout = config.redis_connect_timeout;
        let clustered = fred.server.is_clustered();
        let pool = Builder::from_config(fred)
            .with_connection_config(|connection| {
                connection.connection_timeout = connect_timeout;
                connection.internal_command_timeout = connect_timeout;
                // Never replay an in-flight command after a reconnect: writes run at most once.
                connection.max_command_attempts = 1;
                // fred counts following a redirection as another attempt, so with one attempt
                // it would fail the command in a way that reads like a dropped connection.
                // Instead a MOVED or ASK comes back as "too many redirections" (the node did
                // not run the command; fred has re-read the slot map) and [`Redis::run`] sends
                // it again.
                connection.max_redirections = 0;
                connection.tcp = TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                };
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = config.redis_command_timeout;
            })
            // Forever, from 100 ms doubling up to 5 s between attempts.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_pool(connections)
            .map_err(|err| Error::Internal(format!("building the Redis pool: {err}")))?;
        let links = Arc::new(Links {
            failed_at: pool.clients().iter().map(|_| AtomicU64::new(0)).collect(),
            failures: pool
                .clients()
                .iter()
                .map(|_| watch::Sender::new(0))
                .collect(),
            epoch: Instant::now(),
            client_wide_failures: !clustered,
            next: AtomicUsize::new(0),
        });
        // Subscribed here, before connecting, so that no connection event goes unseen.
        for (index, client) in pool.clients().iter().enumerate() {
            tokio::spawn(links.clone().follow(
                index,
                client.error_rx(),
                client.reconnect_rx(),
                stats.clone(),
            ));
        }
        stats.add_pool(&pool, &links);
        pool.connect();
        match tokio::time::timeout(connect_timeout, pool.wait_for_connect()).await {
            Ok(Ok(())) => tracing::debug!(connections, "connected to Redis"),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "Redis is not reachable yet; retrying in the background")
            }
            Err(_) => tracing::warn!(
                timeout = ?connect_timeout,
                "Redis is not reachable yet; retrying in the background"
            ),
        }
        Ok(Self {
            pool,
            command_timeout: config.redis_command_timeout,
            retry_reads: config.redis_retry_on_timeout,
            links,
            stats,
            near_cache,
            clustered,
            lock_sync,
        })
    }

    /// The process's replica-confirmed lock acquisitions.
    pub fn lock_sync(&self) -> &LockSync {
        &self.lock_sync
    }

    /// Runs one command built by `command` on `client` (a dedicated connection, or a pool
    /// client the caller picked to bypass [`Redis::run`]'s checks) within the call's budget;
    /// sent once.
    pub(crate) async fn run_on<R, F, Fut>(
        &self,
        client: &Client,
        call: &Call,
        idempotency: Idempotency,
        command: F,
    ) -> Result<R, Error>
    where
        F: FnOnce(WithOptions<Client>) -> Fut,
        Fut: Future<Output = Result<R, RedisError>>,
    {
        let budget = call.budget();
        if budget.timeout.is_zero() {
            self.stats.command_failed(CommandErrorKind::Timeout);
            return Err(Error::DeadlineExceeded {
                outcome_unknown: false,
            });
        }
        let options = command_options(budget);
        match Box::pin(command(client.with_options(&options))).await {
            Ok(reply) => Ok(reply),
            Err(err) => {
                let timed_out = matches!(err.kind(), ErrorKind::Timeout);
                let err = Error::from_redis(err, idempotency, budget, call.operands);
                self.stats
                    .command_failed(CommandErrorKind::of(&err, timed_out));
                Err(err)
            }
        }
    }

    /// Whether Redis is a cluster.
    pub fn clustered(&self) -> bool {
        self.clustered
    }

    /// The nodes a node-local command must reach: each primary of a cluster (UNAVAILABLE
    /// before the gateway has seen any), or `[None]` for the one server.
    pub(crate) fn nodes(&self) -> Result<Vec<Option<Server>>, Error> {
        if !self.clustered {
            return Ok(vec![None]);
        }
        let primaries = self.primaries();
        if primaries.is_empty() {
            return Err(Error::redis_unreachable());
        }
        Ok(primaries.into_iter().map(Some).collect())
    }

    /// The cluster's primaries as last seen (empty on a single Redis, or before the first
    /// connection).
    pub fn primaries(&self) -> Vec<Server> {
        self.pool
            .clients()
            .first()
            .and_then(|client| client.cached_cluster_state())
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default()
    }

    /// The process's near cache.
    pub fn near_cache(&self) -> &NearCache {
        &self.near_cache
    }

    /// The per-command timeout from the configuration.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// The index of the next usable pooled client in round-robin order, if any is up.
    fn usable_client(&self) -> Option<usize> {
        let clients = self.pool.clients();
        let start = self.links.next.fetch_add(1, Ordering::Relaxed);
        (0..clients.len())
            .map(|offset| (start + offset) % clients.len())
            .find(|&index| self.links.usable(index, &clients[index]))
    }

    /// Closes every connection; bounded, since QUIT waits for a connection that may never
    /// come back.
    pub async fn quit(&self) {
        if !self
            .pool
            .clients()
            .iter()
            .any(|client| client.is_connected())
        {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(1), self.pool.quit()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "closing the Redis pool"),
            Err(_) => tracing::debug!("Redis did not acknowledge QUIT in time"),
        }
    }

    /// Runs one command built by `command` on a connected client, within the call's budget.
    ///
    /// `command` may be called again: for [`Idempotency::Idempotent`] commands with
    /// `REDIS_RETRY_ON_TIMEOUT`, once, when the first attempt timed out or lost its connection
    /// and the deadline allows; and for any command a cluster redirected (MOVED, ASK: the node
    /// did not run it), within the deadline. A command that fails before being sent is never
    /// unknown.
    pub async fn run<R, F, Fut>(
        &self,
        call: &Call,
        idempotency: Idempotency,
        command: F,
    ) -> Result<R, Error>
    where
        F: Fn(WithOptions<Client>) -> Fut,
        Fut: Future<Output = Result<R, RedisError>>,
    {
        let attempts = if idempotency == Idempotency::Idempotent && self.retry_reads {
            2
        } else {
            1
        };
        let mut attempt = 1;
        let mut redirections = 0u32;
        loop {
            let budget = call.budget();
            if budget.timeout.is_zero() {
                self.stats.command_failed(CommandErrorKind::Timeout);
                return Err(Error::DeadlineExceeded {
                    outcome_unknown: false,
                });
            }
            if self.clustered && self.stats.cluster_down() {
                self.stats.command_failed(CommandErrorKind::Unavailable);
                return Err(Error::Unavailable {
                    message: "the Redis Cluster is down (cluster_state:fail: a slot has no \
                              serving primary); the command was not sent"
                        .into(),
                    outcome_unknown: false,
                });
            }
            let Some(index) = self.usable_client() else {
                self.stats.command_failed(CommandErrorKind::Unavailable);
                return Err(Error::redis_unreachable());
            };
            let mut connection_failed = self.links.failures[index].subscribe();
            let options = command_options(budget);
            // Biased toward the reply: when the reply and the failure signal are both ready,
            // the command did complete, and an applied write must not be reported as unknown.
            // Boxed: fred's command futures are several kilobytes, and a future embedded here
            // would make every caller's future as large, copied at each move (a Get's handler
            // future was 17 KB, and memcpy the gateway's largest cost). One small allocation
            // costs less.
            let command = Box::pin(command(self.pool.clients()[index].with_options(&options)));
            let reply = tokio::select! {
                biased;
                reply = command => reply,
                _ = connection_failed.changed() => Err(RedisError::new(
                    ErrorKind::IO,
                    "the connection failed while the command was pending",
                )),
            };
            let err = match reply {
                Ok(reply) => return Ok(reply),
                Err(err) => err,
            };
            if is_redirection(&err) && redirections < MAX_REDIRECTIONS {
                // The node did not run it (the slot moved, or is moving): send it again,
                // whatever it is. After a MOVED fred has the new slot map, so at once; an ASK
                // (the slot is migrating) repeats until the migration is done, so with a
                // growing pause.
                redirections += 1;
                if redirections > 1 {
                    let pause = Duration::from_millis(1 << redirections.min(6));
                    tokio::time::sleep(pause.min(budget.timeout)).await;
                }
                continue;
            }
            let timed_out = matches!(err.kind(), ErrorKind::Timeout);
            if attempt < attempts && is_retryable(&err) {
                self.stats.command_failed(if timed_out {
                    CommandErrorKind::Timeout
                } else {
                    CommandErrorKind::Unavailable
                });
                tracing::debug!(error = %err, "retrying an idempotent read");
                attempt += 1;
                continue;
            }
            let err = Error::from_redis(err, idempotency, budget, call.operands);
            self.stats
                .command_failed(CommandErrorKind::of(&err, timed_out));
            return Err(err);
        }
    }

    /// Runs a Lua script within the call's budget (see [`run_script`]).
    pub async fn eval(
        &self,
        call: &Call,
        idempotency: Idempotency,
        script: &Script,
        keys: Vec<Key>,
        args: Vec<Value>,
    ) -> Result<Value, Error> {
        self.run(call, idempotency, |client| {
            run_script(
                client,
                script,
                keys.clone(),
                args.clone(),
                self.command_timeout,
            )
        })
        .await
    }

    /// On WRONGTYPE, asks Redis what `key` holds, so the status can say it ("the key holds a
    /// list; this operation works on a hash"). The extra round trip is paid on that error only.
    pub(crate) async fn name_wrong_type<T>(
        &self,
        call: &Call,
        key: &Key,
        expected: &'static str,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        match result {
            // Boxed, so that the lookup's future does not weigh on every call's future.
            Err(Error::WrongType { .. }) => {
                Err(Box::pin(self.wrong_type(call, key, expected)).await)
            }
            other => other,
        }
    }

    /// The WRONGTYPE error for `key`, naming what it holds when Redis says.
    async fn wrong_type(&self, call: &Call, key: &Key, expected: &'static str) -> Error {
        let actual = self
            .run(call, Idempotency::Idempotent, |client| {
                let key = key.clone();
                async move { client.r#type::<String, _>(key).await }
            })
            .await
            .ok();
        Error::WrongType {
            expected: Some(expected),
            actual,
        }
    }

    /// Sends PING within `timeout` and measures the round trip; used by the health probe.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        let call = Call::new(Some(timeout), timeout, Namespace::default());
        self.round_trip(&call).await
    }

    /// On a cluster that was reported down (a `CLUSTERDOWN The cluster is down` reply, which
    /// fred treats as a broken connection): whether it serves again, by a read of one key sent
    /// past the refusal in [`Redis::run`]; clears the report when it does. Always true on a
    /// single Redis, and on a cluster not reported down.
    pub async fn cluster_serves(&self, timeout: Duration) -> Result<bool, Error> {
        if !self.clustered || !self.stats.cluster_down() {
            return Ok(true);
        }
        let call = Call::new(Some(timeout), timeout, Namespace::default());
        let probe = self
            .run_on(
                self.pool.next(),
                &call,
                Idempotency::Idempotent,
                |client| async move { client.exists::<u64, _>(CLUSTER_PROBE_KEY).await },
            )
            .await;
        let serves = probe.is_ok();
        if serves {
            self.stats.set_cluster_down(false);
        }
        Ok(serves)
    }

    /// Sends PING within the call's budget and measures the round trip.
    pub async fn round_trip(&self, call: &Call) -> Result<Duration, Error> {
        self.run(call, Idempotency::Idempotent, |client| async move {
            let started = Instant::now();
            client.ping::<String>(None).await?;
            Ok(started.elapsed())
        })
        .await
    }
}

/// Runs `script` on `client` by EVALSHA, sending the source with EVAL on NOSCRIPT (a restarted
/// or failed-over Redis; NOSCRIPT means nothing ran, so this is safe for scripts that must run
/// at most once). Within the client's timeout option, else `default_timeout`.
fn run_script(
    client: WithOptions<Client>,
    script: &Script,
    keys: Vec<Key>,
    args: Vec<Value>,
    default_timeout: Duration,
) -> impl Future<Output = Result<Value, RedisError>> + '_ {
    let keys = MultipleKeys::from(keys);
    // fred applies per-command options only through the interfaces `WithOptions` implements,
    // and the Lua one is not among them: the call's timeout is applied here, or a script would
    // wait for the default command timeout past the deadline.
    let timeout = client.options().timeout.unwrap_or(default_timeout);
    // Each fred future boxed (they are kilobytes each): the script's future stays small,
    // instead of being copied whole at every move on the way into `run`'s box.
    let script_run = async move {
        let first =
            Box::pin(client.evalsha::<Value, _, _, _>(script.sha(), keys.clone(), args.clone()))
                .await;
        match first {
            Err(err) if err.details().starts_with("NOSCRIPT") => {
                Box::pin(client.eval(script.source(), keys, args)).await
            }
            other => other,
        }
    };
    async move {
        tokio::time::timeout(timeout, script_run)
            .await
            .unwrap_or_else(|_| Err(RedisError::new(ErrorKind::Timeout, "Request timed out.")))
    }
}

/// The options of every command the gateway sends for a call: the call's time budget, sent
/// once (never replayed after a reconnect), failing at once when its connection is down.
pub(crate) fn command_options(budget: Budget) -> Options {
    Options {
        timeout: Some(budget.timeout),
        max_attempts: Some(1),
        fail_fast: true,
        ..Options::default()
    }
}

/// The nodes a node-local command (SCAN, CONFIG, a key-event subscription) must reach through
/// `client`: each primary of a cluster, as last seen, or `[None]` (its one server).
pub(crate) fn primaries_or_one(client: &Client) -> Vec<Option<Server>> {
    let primaries = client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default();
    if primaries.is_empty() {
        vec![None]
    } else {
        primaries.into_iter().map(Some).collect()
    }
}

/// `client` (with the call's options) sent to `node` when one is given: a cluster command
/// that must reach a given node (SCAN, CONFIG, a subscription). One merged set of options:
/// nested `WithOptions` would let the inner ones reset the node.
pub(crate) fn on_node(client: WithOptions<Client>, node: Option<&Server>) -> WithOptions<Client> {
    match node {
        Some(node) => {
            let mut options = client.options().clone();
            options.cluster_node = Some(node.clone());
            (*client).with_options(&options)
        }
        None => client,
    }
}

/// Failures after which an idempotent read may be sent again.
/// The start of the reply with which a cluster node refuses every command while the cluster
/// is down (as opposed to `CLUSTERDOWN Hash slot not served`, for one slot).
const CLUSTER_DOWN: &str = "CLUSTERDOWN The cluster is down";

/// The key the health probe reads to see whether a cluster that was down serves again.
const CLUSTER_PROBE_KEY: &str = "__gw:cluster-probe";

/// How many redirections (MOVED, ASK) one call follows.
const MAX_REDIRECTIONS: u32 = 50;

/// Whether fred gave up on a command because the cluster redirected it (MOVED or ASK, with
/// `max_redirections` 0): the node did not run it.
pub(crate) fn is_redirection(err: &RedisError) -> bool {
    err.kind() == &ErrorKind::Routing && err.details().starts_with("Too many redirections")
}

fn is_retryable(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Timeout | ErrorKind::IO | ErrorKind::Canceled
    )
}

/// Reads a bulk-string reply as bytes; `None` for a nil reply.
pub fn reply_bytes(value: Value) -> Result<Option<bytes::Bytes>, Error> {
    match value {
        Value::Null => Ok(None),
        other => other
            .into_bytes()
            .map(Some)
            .ok_or_else(|| Error::Internal("Redis sent a non-string where a value was due".into())),
    }
}

/// Reads an integer reply (Redis integers, or digits in a string for exactness past 2^53).
pub fn reply_i64(value: Value) -> Result<i64, Error> {
    match value {
        Value::Integer(number) => Ok(number),
        other => other
            .as_str()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                Error::Internal(format!("Redis sent {other:?} where an integer was due"))
            }),
    }
}

/// Reads an array reply.
pub fn reply_array(value: Value) -> Result<Vec<Value>, Error> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(Error::Internal(format!(
            "Redis sent {other:?} where an array was due"
        ))),
    }
}
