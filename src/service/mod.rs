//! gRPC services, one module each, over one shared [`Context`].
//!
//! A handler is three steps: validate the request (INVALID_ARGUMENT naming the field), call
//! one typed operation on [`crate::redis::Redis`] with the call's [`Call`] and plain values,
//! map the result back to the response message. Server streams go through
//! [`Context::stream`] (or [`Context::stream_managed`] when ending one must undo something). Status decisions live in [`crate::error`].
//! [`calls`] is the tower layer that counts the calls being served, for [`Stats`] (and measures
//! them for the metrics).

pub mod admission;
pub mod calls;
pub mod hash;
pub mod kv;
mod kv_convert;
mod kv_watch;
pub mod lock;
pub mod monitor;
pub mod session;
mod session_watch;
mod stream;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Request;
use tonic::metadata::MetadataMap;

use crate::auth::{Permission, Principal};
use crate::config::Config;
use crate::error::Error;
use crate::limits::Limits;
use crate::redis::call::parse_grpc_timeout;
use crate::redis::expiry::{ExpiryFeed, FeedSettings};
use crate::redis::near_cache::NearCacheSettings;
use crate::redis::session_endings::SessionEndings;
use crate::redis::wakeups::Wakeups;
use crate::redis::{Call, LockSync, Namespace, NearCache, Redis, RedisStats};
pub use stream::{ResponseStream, Sink};

/// What every service of the process shares, across runtimes.
#[derive(Debug)]
pub struct Shared {
    /// Request and response bounds.
    pub limits: Limits,
    /// Cancelled when the server drains: streams and background work end themselves.
    pub shutdown: CancellationToken,
    /// Every background task (stream producers, later lock renewals and the expiry
    /// subscriber); shutdown waits for them before it closes the Redis pools.
    pub tasks: TaskTracker,
    /// Counters for the gateway's own statistics.
    pub stats: Stats,
    /// The Redis layer's counters: failed commands, reconnects, pool state.
    pub redis_stats: Arc<RedisStats>,
    /// Session timeouts when a Create does not choose them.
    pub session_defaults: SessionDefaults,
    /// The lock waiters of this process, woken through its one pub/sub subscription.
    pub lock_wakeups: Arc<Wakeups>,
    /// The key-event feed of WatchExpirations.
    pub expiry: Arc<ExpiryFeed>,
    /// The session-endings feed of Session.WatchEnded (and its sweeper).
    pub session_endings: Arc<SessionEndings>,
    /// What Monitor.GetHealth remembers between checks (whether Redis is evicting).
    pub evictions: monitor::EvictionWatch,
    /// The near cache of KeyValue reads (every runtime's [`Redis`] holds it too).
    pub near_cache: Arc<NearCache>,
    /// Replica-confirmed lock acquisitions (every runtime's [`Redis`] holds it too).
    pub lock_sync: Arc<LockSync>,
    /// The auth file's clients, when callers authenticate.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// The gRPC port's TLS, when it serves TLS (every runtime's handshakes read it).
    pub tls: Option<Arc<crate::transport::tls::ServerTls>>,
    /// Open watch streams per tenant namespace, bounded.
    pub watchers: Arc<WatcherSlots>,
}

/// Open WatchExpirations and Session.WatchEnded streams per tenant namespace, at most
/// GATEWAY_MAX_WATCHERS_PER_TENANT each, so that one tenant cannot hold every stream.
#[derive(Debug)]
pub struct WatcherSlots {
    max: usize,
    open: Mutex<std::collections::HashMap<String, usize>>,
}

impl WatcherSlots {
    /// At most `max` watchers per namespace.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::default(),
        }
    }

    /// A slot for one more watcher of `namespace`, held until dropped; RESOURCE_EXHAUSTED
    /// when the namespace has its maximum open.
    pub fn admit(self: &Arc<Self>, namespace: &Namespace) -> Result<WatcherSlot, Error> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(namespace.prefix().to_owned()).or_default();
        if *count >= self.max {
            return Err(Error::ResourceExhausted(format!(
                "this tenant has {} watch streams open, the limit \
                 (GATEWAY_MAX_WATCHERS_PER_TENANT); close one first",
                self.max
            )));
        }
        *count += 1;
        Ok(WatcherSlot {
            slots: self.clone(),
            namespace: namespace.prefix().to_owned(),
        })
    }
}

/// One open watch stream's place among its tenant's; freed when dropped.
#[derive(Debug)]
pub struct WatcherSlot {
    slots: Arc<WatcherSlots>,
    namespace: String,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.namespace) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.namespace);
            }
        }
    }
}

/// Session timeouts when a Create does not choose them.
#[derive(Debug, Clone, Copy)]
pub struct SessionDefaults {
    /// Idle timeout (GATEWAY_SESSION_IDLE_TIMEOUT).
    pub idle: Duration,
    /// Absolute timeout, if any (GATEWAY_SESSION_ABSOLUTE_TIMEOUT).
    pub absolute: Option<Duration>,
}

impl Shared {
    /// Shared state from the settings, ending its work when `shutdown` is cancelled.
    pub fn new(config: &Config, shutdown: CancellationToken) -> Self {
        Self {
            limits: Limits::from(config),
            shutdown,
            tasks: TaskTracker::new(),
            stats: Stats::default(),
            redis_stats: Arc::default(),
            session_defaults: SessionDefaults {
                idle: config.session_idle_timeout,
                absolute: config.session_absolute_timeout,
            },
            lock_wakeups: Arc::default(),
            expiry: Arc::new(ExpiryFeed::new(FeedSettings {
                configure: !config.no_configure_keyspace_events,
                retention: config.expiry_retention,
                resume_window: config.expiry_resume_window,
                database: config.redis_db,
            })),
            session_endings: Arc::new(SessionEndings::new(config.expiry_retention)),
            evictions: monitor::EvictionWatch::default(),
            near_cache: Arc::new(NearCache::new(NearCacheSettings {
                max_entries: config.near_cache_max_entries,
                max_bytes: config.near_cache_max_bytes,
                max_age: config.near_cache_max_age,
                prefixes: config.near_cache_prefixes.clone(),
            })),
            lock_sync: Arc::new(LockSync::new(
                config.lock_replica_acks,
                config.lock_replica_timeout,
            )),
            auth: None,
            tls: None,
            watchers: Arc::new(WatcherSlots::new(config.max_watchers_per_tenant)),
        }
    }
}

/// The gateway's own counters, process-wide (Monitor.GetGatewayStats reports them).
#[derive(Debug)]
pub struct Stats {
    /// When this server started (its [`Shared`] was made), for the gateway's uptime.
    pub started_at: Instant,
    /// Server streams open now.
    pub open_streams: AtomicU64,
    /// Server streams opened since start.
    pub streams_opened: AtomicU64,
    /// Each runtime's call counters ([`calls::CallLayer`] counts into them), summed by
    /// [`Stats::in_flight_calls`].
    runtime_calls: Mutex<Vec<Arc<calls::RuntimeCalls>>>,
    /// Open WatchExpirations streams.
    pub expiry_subscribers: AtomicU64,
    /// Key events delivered to WatchExpirations subscribers.
    pub events_delivered: AtomicU64,
    /// Key events skipped because a subscriber fell behind (reported to it as `gap{lagged}`).
    pub events_dropped: AtomicU64,
    /// The gRPC port's connections: accepted, open, and why they closed.
    pub connections: Arc<crate::transport::ConnectionStats>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started_at: Instant::now(),
            open_streams: AtomicU64::new(0),
            streams_opened: AtomicU64::new(0),
            runtime_calls: Mutex::new(Vec::new()),
            expiry_subscribers: AtomicU64::new(0),
            events_delivered: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            connections: Arc::default(),
        }
    }
}

impl Stats {
    /// Counters for one more runtime's calls (measured into `measured` when metrics are on),
    /// included in [`Stats::in_flight_calls`] from now on.
    pub fn add_runtime(
        &self,
        measured: Option<Arc<crate::metrics::CallTable>>,
    ) -> Arc<calls::RuntimeCalls> {
        let calls = Arc::new(calls::RuntimeCalls::new(measured));
        self.runtimes().push(calls.clone());
        calls
    }

    /// gRPC calls being served now on every runtime, streams included, from the request until
    /// the response body is finished or dropped.
    pub fn in_flight_calls(&self) -> u64 {
        self.runtimes().iter().map(|calls| calls.in_flight()).sum()
    }

    fn runtimes(&self) -> std::sync::MutexGuard<'_, Vec<Arc<calls::RuntimeCalls>>> {
        // The vector stays whole whatever panicked while it was held: use it.
        self.runtime_calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a service needs: this runtime's Redis pool and the process-wide [`Shared`] state.
/// Cheap to clone.
#[derive(Clone)]
pub struct Context {
    /// The Redis pool of the runtime this service runs on.
    pub redis: Redis,
    /// Limits, shutdown, tasks and counters.
    pub shared: Arc<Shared>,
}

impl Context {
    /// A context over `redis` sharing `shared`.
    pub fn new(redis: Redis, shared: Arc<Shared>) -> Self {
        Self { redis, shared }
    }

    /// The request bounds.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The per-call context of a request: its gRPC deadline and the caller's namespace (the
    /// authenticated client's, or the whole keyspace when callers do not authenticate).
    pub fn call<T>(&self, request: &Request<T>) -> Call {
        let namespace = request
            .extensions()
            .get::<Arc<Principal>>()
            .map(|principal| principal.namespace.clone())
            .unwrap_or_default();
        call_context(request.metadata(), self.redis.command_timeout(), namespace)
    }

    /// Refuses the call unless its caller may do what `permission` covers (always allowed
    /// when callers do not authenticate): for what a request's fields add to its method's
    /// permission, e.g. a Get that also refreshes the TTL.
    pub fn require<T>(&self, request: &Request<T>, permission: Permission) -> Result<(), Error> {
        match request.extensions().get::<Arc<Principal>>() {
            Some(principal) if !principal.allows(permission) => {
                Err(Error::PermissionDenied(format!(
                    "client `{}` lacks the `{}` permission this request needs",
                    principal.name,
                    permission.name()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Values that may be missing, as the API reports them (GetMany of KeyValue and Hash).
fn optional_values(values: Vec<Option<bytes::Bytes>>) -> Vec<crate::pb::OptionalValue> {
    values
        .into_iter()
        .map(|value| crate::pb::OptionalValue {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        })
        .collect()
}

/// Milliseconds since the epoch as a protobuf Timestamp.
fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A duration as a protobuf Duration.
fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: value.as_secs() as i64,
        nanos: value.subsec_nanos() as i32,
    }
}

/// The per-call context of a request with `metadata`.
fn call_context(metadata: &MetadataMap, command_timeout: Duration, namespace: Namespace) -> Call {
    let grpc_timeout = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    Call::new(grpc_timeout, command_timeout, namespace)
}
