//! The near cache: KeyValue.Get and GetMany served from the gateway's memory for keys a caller
//! marks (`near_cache: true`) or that start with a configured prefix
//! (`GATEWAY_NEAR_CACHE_PREFIXES`), kept coherent by Redis client tracking.
//!
//! # How it stays coherent
//!
//! - Two dedicated connections per process (the *tracking pair*): a reader with
//!   `CLIENT TRACKING on REDIRECT <subscriber>`, and a subscriber to `__redis__:invalidate`.
//!   Every cache fill is read on the reader (a Lua script reading each key's type, value and
//!   PTTL), so Redis remembers those keys — present or missing — and publishes an invalidation
//!   to the subscriber the next time one changes, expires, is evicted, or the database is
//!   flushed. (One RESP3 connection receiving the invalidations as pushes would do, but fred 10
//!   drops the RESP3 form of the "everything" invalidation that FLUSHALL and FLUSHDB send; the
//!   pub/sub form carries it.)
//! - A fill snapshots the key's stripe counter and the cache generation before it sends the
//!   read, and inserts only if neither moved by the time the reply is in (checked under the
//!   stripe's lock, the lock an invalidation takes to bump the counter and drop the entry). So
//!   an invalidation that arrived while the read was in flight is never overwritten by the
//!   value it invalidated: after an invalidation has been handled, no hit returns the old value.
//! - The pair never reconnects by itself: when either connection drops (or misses a heartbeat)
//!   the whole cache is flushed, the generation moves on (fills in flight are discarded), and a
//!   new pair is made and tracking enabled before it takes fills; invalidations lost because
//!   their channel lagged flush the cache too. Reads meanwhile go to Redis uncached. A
//!   Redis restart is such a drop.
//! - The gateway's own writes drop their keys here as soon as Redis answered them, so a client
//!   reads its own writes through this gateway. Writes through other gateways or straight to
//!   Redis become visible when their invalidation arrives (well under a millisecond locally).
//! - Entries also carry the key's TTL: an entry is never served past the key's expiry (Redis
//!   removes expired keys lazily, and its invalidation can lag the TTL), nor past
//!   `GATEWAY_NEAR_CACHE_MAX_AGE`, a safety net that bounds staleness even if an invalidation
//!   were lost without the connection dropping.
//!
//! Bounded by entries and bytes (`GATEWAY_NEAR_CACHE_MAX_ENTRIES`, `GATEWAY_NEAR_CACHE_MAX_BYTES`):
//! each entry is charged its key and value bytes plus [`ENTRY_OVERHEAD`], and at least
//! max_bytes / max_entries, so both bounds hold. Eviction is quick_cache's (CLOCK-Pro-like,
//! scan resistant).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use fred::types::config::Config as FredConfig;
use fred::types::{RespVersion, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::fanout::dedicated_builder;
use super::scripts::NEAR_CACHE_FILL;
use super::strings::TtlState;
use super::{command_options, reply_array, reply_i64, run_script};
use crate::error::Error;
use crate::redis::Call;

/// Bytes charged per entry besides its key and value: the table slot, the entry's fields and
/// the allocations behind the two `Bytes`.
pub const ENTRY_OVERHEAD: usize = 96;
/// Stripes of invalidation counters (a power of two).
const STRIPES: usize = 256;
/// How often the tracker's connection is checked with a PING, and how long the PING may take:
/// a connection that silently stopped delivering invalidations is noticed within about twice
/// this.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Invalidation messages buffered between the connection and the cache; if they pile up past
/// this, the cache is flushed (nothing is lost, only entries). fred gives each of a client's
/// event channels this capacity, allocated up front, so it is kept moderate.
const INVALIDATION_BUFFER: usize = 1024;
/// The pub/sub channel Redis sends a redirected client's invalidations on.
const INVALIDATION_CHANNEL: &str = "__redis__:invalidate";

/// The near cache's settings.
#[derive(Debug, Clone)]
pub struct NearCacheSettings {
    /// Most entries; 0 turns the near cache off (GATEWAY_NEAR_CACHE_MAX_ENTRIES).
    pub max_entries: usize,
    /// Most bytes of keys, values and bookkeeping (GATEWAY_NEAR_CACHE_MAX_BYTES).
    pub max_bytes: usize,
    /// Longest an entry is served without a new read (GATEWAY_NEAR_CACHE_MAX_AGE).
    pub max_age: Duration,
    /// Caller key prefixes cached without asking (GATEWAY_NEAR_CACHE_PREFIXES).
    pub prefixes: Vec<String>,
}

/// What a key held when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// A string value.
    Value(Bytes),
    /// Nothing: the key did not exist.
    Absent,
    /// Another type, by its Redis name (Get answers WRONGTYPE; GetMany reads it as missing).
    OtherType(Arc<str>),
}

/// A cached read: what the key held and until when that may be served.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What the key held.
    pub holding: Holding,
    /// When the key expires in Redis, if it has a TTL (measured from before the read was sent,
    /// so never later than Redis' own).
    pub key_expires_at: Option<Instant>,
    /// Served until then: the key's expiry or the max age, whichever is first.
    fresh_until: Instant,
    /// When Redis read it (its clock, µs): a read never replaces a later one.
    read_at: u64,
}

impl Entry {
    /// The key's TTL as KeyValue.Get reports it, at `now`.
    pub fn ttl(&self, now: Instant) -> TtlState {
        match (&self.holding, self.key_expires_at) {
            (Holding::Absent, _) => TtlState::Missing,
            (_, None) => TtlState::Persistent,
            (_, Some(at)) => TtlState::Expiring(at.saturating_duration_since(now)),
        }
    }

    /// The value, if the key held a string.
    pub fn value(&self) -> Option<Bytes> {
        match &self.holding {
            Holding::Value(value) => Some(value.clone()),
            Holding::Absent | Holding::OtherType(_) => None,
        }
    }
}

/// The cache's counters (Monitor.GetGatewayStats and the metrics report them).
#[derive(Debug, Default)]
pub struct NearCacheCounters {
    /// Reads served from the cache.
    pub hits: AtomicU64,
    /// Reads that asked for the cache and went to Redis.
    pub misses: AtomicU64,
    /// Fills whose result was not kept because an invalidation or a flush came while they were
    /// in flight.
    pub fills_discarded: AtomicU64,
    /// Keys invalidated by Redis.
    pub invalidations: AtomicU64,
    /// Times the whole cache was dropped (tracking connection lost or reconnected, database
    /// flushed, invalidations lagged).
    pub flushes: AtomicU64,
    /// Entries evicted to stay within the bounds.
    pub evictions: Arc<AtomicU64>,
    /// Whether the tracking connection is up with tracking on (reads use the cache).
    pub tracking: AtomicBool,
}

/// What Monitor and the metrics show of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NearCacheSnapshot {
    /// Whether the cache is configured on.
    pub enabled: bool,
    /// Whether its tracking connection is up (else reads go to Redis uncached).
    pub tracking: bool,
    /// Entries held now.
    pub entries: u64,
    /// Bytes charged for them now.
    pub bytes: u64,
    /// See [`NearCacheCounters`].
    pub hits: u64,
    /// See [`NearCacheCounters`].
    pub misses: u64,
    /// See [`NearCacheCounters`].
    pub fills_discarded: u64,
    /// See [`NearCacheCounters`].
    pub invalidations: u64,
    /// See [`NearCacheCounters`].
    pub flushes: u64,
    /// See [`NearCacheCounters`].
    pub evictions: u64,
}

/// Charges each entry its size, and at least `floor` (max_bytes / max_entries).
#[derive(Debug, Clone)]
struct EntryWeight {
    floor: u64,
}

impl quick_cache::Weighter<Bytes, Entry> for EntryWeight {
    fn weight(&self, key: &Bytes, entry: &Entry) -> u64 {
        let value = match &entry.holding {
            Holding::Value(value) => value.len(),
            Holding::Absent => 0,
            Holding::OtherType(name) => name.len(),
        };
        ((key.len() + value + ENTRY_OVERHEAD) as u64).max(self.floor)
    }
}

/// Counts evictions and remembers, per stripe, the latest read time evicted.
#[derive(Debug, Clone)]
struct Evictions {
    count: Arc<AtomicU64>,
    dropped: DroppedReads,
}

impl quick_cache::Lifecycle<Bytes, Entry> for Evictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, key: Bytes, entry: Entry) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.dropped.record(&key, entry.read_at);
    }
}

/// Per stripe of keys, the latest read time of an entry dropped without an invalidation
/// (evicted, expired): a slower fill of such a key, read earlier, must not come back after it.
/// Atomics, because evictions are reported under the cache's own lock.
#[derive(Debug, Clone)]
struct DroppedReads {
    latest: Arc<[AtomicU64]>,
    /// The stripes' hasher (one instance, shared: its hashes are random per instance).
    hasher: quick_cache::DefaultHashBuilder,
}

impl DroppedReads {
    fn new() -> Self {
        Self {
            latest: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            hasher: quick_cache::DefaultHashBuilder::default(),
        }
    }

    /// The stripe of `key`.
    fn stripe_of(&self, key: &[u8]) -> usize {
        self.hasher.hash_one(key) as usize & (STRIPES - 1)
    }

    fn record(&self, key: &[u8], read_at: u64) {
        self.latest[self.stripe_of(key)].fetch_max(read_at, Ordering::AcqRel);
    }

    fn latest(&self, stripe: usize) -> u64 {
        self.latest[stripe].load(Ordering::Acquire)
    }
}

type Entries =
    quick_cache::sync::Cache<Bytes, Entry, EntryWeight, quick_cache::DefaultHashBuilder, Evictions>;

/// The published tracking connection and the generation it belongs to.
#[derive(Clone)]
struct Tracker {
    client: Client,
    generation: u64,
}

/// The process's near cache, shared by every runtime.
pub struct NearCache {
    settings: NearCacheSettings,
    /// The cache's bounds; None when the cache is off.
    options: Option<quick_cache::Options>,
    /// The entries, allocated on the first fill (quick_cache sizes its table for the bounds
    /// up front: megabytes that a gateway nobody asks for cached reads should not hold).
    entries: OnceLock<Entries>,
    /// Per stripe of keys: bumped by every invalidation of a key of the stripe.
    stripes: Box<[Mutex<u64>]>,
    /// Picks a key's stripe, and remembers the latest read dropped from each.
    dropped: DroppedReads,
    /// Bumped by every flush (with every stripe locked).
    generation: AtomicU64,
    /// The tracking connection fills are read on, while it is up with tracking on.
    tracker: RwLock<Option<Tracker>>,
    /// Hits, misses, invalidations, flushes.
    pub counters: NearCacheCounters,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("settings", &self.settings)
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

/// How a fill found the cache before sending its read.
struct FillTicket {
    tracker: Tracker,
    stripes: Vec<(usize, u64)>,
}

impl NearCache {
    /// A near cache with `settings` (off when `max_entries` or `max_bytes` is 0); it serves
    /// nothing until [`NearCache::run`] has its tracking connection up.
    pub fn new(settings: NearCacheSettings) -> Self {
        let counters = NearCacheCounters::default();
        let dropped = DroppedReads::new();
        let options = (settings.max_entries > 0 && settings.max_bytes > 0)
            .then(|| {
                quick_cache::OptionsBuilder::new()
                    .estimated_items_capacity(
                        settings
                            .max_entries
                            .min(settings.max_bytes / ENTRY_OVERHEAD)
                            .max(1),
                    )
                    .weight_capacity(settings.max_bytes as u64)
                    .build()
            })
            .and_then(|options| match options {
                Ok(options) => Some(options),
                // Only a missing capacity fails, and both are set: not expected, but then the
                // gateway runs without a near cache rather than not at all.
                Err(err) => {
                    tracing::error!(?err, "near cache disabled: bad cache options");
                    None
                }
            });
        Self {
            settings,
            options,
            entries: OnceLock::new(),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            dropped,
            generation: AtomicU64::new(0),
            tracker: RwLock::new(None),
            counters,
        }
    }

    /// A cache that is off (for tools and tests that need a [`super::Redis`] without one).
    pub fn disabled() -> Self {
        Self::new(NearCacheSettings {
            max_entries: 0,
            max_bytes: 0,
            max_age: Duration::ZERO,
            prefixes: Vec::new(),
        })
    }

    /// Whether the cache is configured on.
    pub fn enabled(&self) -> bool {
        self.options.is_some()
    }

    /// The entries, allocated now if this is the first use; None when the cache is off.
    fn cache(&self) -> Option<&Entries> {
        let options = self.options.as_ref()?;
        Some(self.entries.get_or_init(|| {
            Entries::with_options(
                options.clone(),
                EntryWeight {
                    floor: (self.settings.max_bytes / self.settings.max_entries.max(1)) as u64,
                },
                quick_cache::DefaultHashBuilder::default(),
                Evictions {
                    count: self.counters.evictions.clone(),
                    dropped: self.dropped.clone(),
                },
            )
        }))
    }

    /// Whether a read of caller key `key` goes through the cache: the caller asked for it or
    /// the key starts with a configured prefix, and the cache is on.
    pub fn wanted(&self, key: &str, asked: bool) -> bool {
        self.enabled()
            && (asked
                || self
                    .settings
                    .prefixes
                    .iter()
                    .any(|prefix| key.starts_with(prefix.as_str())))
    }

    /// The entry for Redis key `key` if one may be served now; counts a hit or a miss.
    pub fn lookup(&self, key: &Bytes) -> Option<Entry> {
        if !self.enabled() {
            return None;
        }
        let found = self.entries.get().and_then(|entries| {
            let entry = entries.get(key)?;
            if entry.fresh_until > Instant::now() {
                Some(entry)
            } else {
                // Expired or too old: dropping it is always safe.
                self.dropped.record(key, entry.read_at);
                entries.remove(key);
                None
            }
        });
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Reads `keys` on the tracking connection and keeps what may be kept; `None` when the
    /// tracking connection is not up or failed (the caller reads from Redis uncached).
    pub async fn fill(&self, call: &Call, keys: &[Bytes]) -> Option<Vec<Entry>> {
        let entries = self.cache()?;
        let ticket = self.ticket(keys)?;
        let budget = call.budget();
        if budget.timeout.is_zero() {
            return None;
        }
        let options = command_options(budget);
        let sent_at = Instant::now();
        let reply = Box::pin(run_script(
            ticket.tracker.client.with_options(&options),
            &NEAR_CACHE_FILL,
            keys.iter().cloned().map(Key::from).collect(),
            Vec::new(),
            budget.timeout,
        ))
        .await;
        let read = match reply {
            Ok(reply) => self.read_fill(reply, keys.len(), sent_at),
            Err(err) => Err(Error::Internal(err.to_string())),
        };
        let read = match read {
            Ok(read) => read,
            Err(err) => {
                tracing::debug!(error = %err, "near cache fill failed; reading uncached");
                return None;
            }
        };
        for ((key, entry), (stripe, seen)) in keys.iter().zip(&read).zip(&ticket.stripes) {
            let stripe_seq = self.lock_stripe(*stripe);
            let current = *stripe_seq == *seen
                && self.generation.load(Ordering::Acquire) == ticket.tracker.generation;
            // Fills race each other too (their replies are handled by different tasks, and
            // they are sent in another order than their tickets were taken): a read is kept
            // only if it is later than the key's cached one and than every read dropped from
            // its stripe. Redis' clock is cached per event-loop turn, so reads pipelined
            // together can share a time; then which came first is unknown, and neither is kept.
            let cached = entries.peek(key).map(|cached| cached.read_at);
            let later = cached.is_none_or(|cached| cached < entry.read_at)
                && entry.read_at > self.dropped.latest(*stripe);
            if current && later {
                entries.insert(key.clone(), entry.clone());
            } else {
                // This read was answered but is not kept: nothing read before it (or at the
                // same time) may be served after it.
                if cached.is_some_and(|cached| cached <= entry.read_at) {
                    entries.remove(key);
                }
                self.dropped.record(key, entry.read_at);
                self.counters
                    .fills_discarded
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(read)
    }

    /// The tracking connection and every key's stripe counter, before a fill is sent.
    fn ticket(&self, keys: &[Bytes]) -> Option<FillTicket> {
        let tracker = self
            .tracker
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let stripes = keys
            .iter()
            .map(|key| {
                let stripe = self.stripe_of(key);
                (stripe, *self.lock_stripe(stripe))
            })
            .collect();
        // A flush after the tracker was published: its connection is gone.
        (self.generation.load(Ordering::Acquire) == tracker.generation)
            .then_some(FillTicket { tracker, stripes })
    }

    /// Parses the fill script's reply into one entry per key.
    fn read_fill(&self, reply: Value, count: usize, sent_at: Instant) -> Result<Vec<Entry>, Error> {
        let items = reply_array(reply)?;
        if items.len() != count * 3 + 1 {
            return Err(Error::Internal(format!(
                "the near cache read returned {} items for {count} keys",
                items.len()
            )));
        }
        let oldest = sent_at + self.settings.max_age;
        let mut items = items.into_iter();
        let read_at = items.next().map(reply_i64).transpose()?.unwrap_or_default() as u64;
        let mut read = Vec::with_capacity(count);
        while let (Some(kind), Some(value), Some(pttl)) = (items.next(), items.next(), items.next())
        {
            let kind = kind.as_string().unwrap_or_default();
            let holding = match kind.as_str() {
                "none" => Holding::Absent,
                "string" => Holding::Value(value.into_bytes().unwrap_or_default()),
                other => Holding::OtherType(Arc::from(other)),
            };
            let pttl = reply_i64(pttl)?;
            let key_expires_at = (pttl >= 0).then(|| sent_at + Duration::from_millis(pttl as u64));
            let fresh_until = key_expires_at.map_or(oldest, |at| at.min(oldest));
            read.push(Entry {
                holding,
                key_expires_at,
                fresh_until,
                read_at,
            });
        }
        Ok(read)
    }

    /// Drops `key` after the gateway wrote it (or tried to), so that a later read through this
    /// gateway goes to Redis, and a fill in flight does not keep the old value.
    pub fn forget(&self, key: &[u8]) {
        if self.enabled() {
            self.invalidate(key);
        }
    }

    /// Drops `key` and moves its stripe on.
    fn invalidate(&self, key: &[u8]) {
        let mut guard = self.lock_stripe(self.stripe_of(key));
        *guard += 1;
        if let Some(entries) = self.entries.get() {
            entries.remove(key);
        }
    }

    /// Drops every entry and moves the generation on, with every stripe locked, so that no
    /// fill in flight inserts afterwards. Returns the new generation.
    fn flush(&self) -> u64 {
        let guards: Vec<_> = (0..STRIPES)
            .map(|stripe| self.lock_stripe(stripe))
            .collect();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(entries) = self.entries.get() {
            entries.clear();
        }
        drop(guards);
        generation
    }

    /// The stripe of `key`'s invalidation counter.
    fn stripe_of(&self, key: &[u8]) -> usize {
        self.dropped.stripe_of(key)
    }

    fn lock_stripe(&self, stripe: usize) -> MutexGuard<'_, u64> {
        // A counter stays valid whatever panicked while it was held.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles one invalidation message: some keys, or none for "everything" (FLUSHDB,
    /// FLUSHALL, or Redis dropping its tracking table).
    fn invalidated(&self, keys: &[Key]) {
        if keys.is_empty() {
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
            self.flush();
            return;
        }
        for key in keys {
            self.invalidate(key.as_bytes());
        }
        self.counters
            .invalidations
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
    }

    /// What Monitor and the metrics show.
    pub fn snapshot(&self) -> NearCacheSnapshot {
        let counters = &self.counters;
        let (entries, bytes) = self
            .entries
            .get()
            .map_or((0, 0), |entries| (entries.len() as u64, entries.weight()));
        NearCacheSnapshot {
            enabled: self.enabled(),
            tracking: counters.tracking.load(Ordering::Relaxed),
            entries,
            bytes,
            hits: counters.hits.load(Ordering::Relaxed),
            misses: counters.misses.load(Ordering::Relaxed),
            fills_discarded: counters.fills_discarded.load(Ordering::Relaxed),
            invalidations: counters.invalidations.load(Ordering::Relaxed),
            flushes: counters.flushes.load(Ordering::Relaxed),
            evictions: counters.evictions.load(Ordering::Relaxed),
        }
    }

    fn publish(&self, tracker: Option<Tracker>) {
        self.counters
            .tracking
            .store(tracker.is_some(), Ordering::Relaxed);
        *self.tracker.write().unwrap_or_else(PoisonError::into_inner) = tracker;
    }

    /// Keeps the tracking connection up until `shutdown`: connects, enables tracking, applies
    /// invalidations; on any loss flushes and starts over (from 100 ms doubling up to 5 s
    /// between attempts). Returns at once when the cache is off.
    pub async fn run(
        self: Arc<Self>,
        fred: FredConfig,
        timeout: Duration,
        shutdown: CancellationToken,
    ) {
        if !self.enabled() {
            return;
        }
        if fred.server.is_clustered() {
            // Tracking is per node, and its invalidations go to a subscriber on the same node;
            // one pair would leave the other nodes' keys untracked. Until there is a pair per
            // primary, reads that ask for the cache go to Redis.
            tracing::info!("near cache: not available with Redis Cluster yet; reads go to Redis");
            return;
        }
        let mut backoff = Duration::from_millis(100);
        let mut lost_before = false;
        loop {
            match self.track(&fred, timeout, &shutdown).await {
                Ok(Ended::Shutdown) => return,
                Ok(Ended::Lost(reason)) => {
                    tracing::warn!(
                        reason,
                        "near cache: tracking connection lost; cache flushed, reconnecting"
                    );
                    backoff = Duration::from_millis(100);
                    lost_before = true;
                }
                Err(err) if lost_before => {
                    tracing::debug!(error = %err, "near cache: tracking connection not up yet");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "near cache: tracking connection not up yet; reads go to Redis uncached");
                    lost_before = true;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One tracking pair's life: connect the subscriber and the reader, subscribe, enable
    /// tracking with redirection, publish, apply invalidations until either connection is lost
    /// or the process shuts down; then unpublish and flush.
    async fn track(
        &self,
        fred: &FredConfig,
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Ended, Error> {
        let subscriber = tracking_client(fred, timeout)?;
        let reader = tracking_client(fred, timeout)?;
        let mut invalidations = subscriber.invalidation_rx();
        let mut subscriber_connection = subscriber.connect();
        let mut reader_connection = reader.connect();
        let ended = async {
            let setup = async {
                subscriber.wait_for_connect().await?;
                reader.wait_for_connect().await?;
                let subscriber_id: i64 = subscriber.client_id().await?;
                subscriber.subscribe(INVALIDATION_CHANNEL).await?;
                reader
                    .client_tracking::<(), _, _>(
                        "on",
                        Some(subscriber_id),
                        Vec::<String>::new(),
                        false,
                        false,
                        false,
                        false,
                    )
                    .await
            };
            match tokio::time::timeout(timeout, setup).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(Error::Internal(format!("enabling tracking: {err}"))),
                Err(_) => return Err(Error::redis_unreachable()),
            }
            let generation = self.flush();
            self.publish(Some(Tracker {
                client: reader.clone(),
                generation,
            }));
            tracing::debug!("near cache: tracking on");
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let ended = loop {
                tokio::select! {
                    message = invalidations.recv() => match message {
                        Ok(message) => self.invalidated(&message.keys),
                        Err(RecvError::Lagged(_)) => {
                            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
                            self.flush();
                        }
                        Err(RecvError::Closed) => break Ended::Lost("invalidations closed"),
                    },
                    _ = &mut subscriber_connection => break Ended::Lost("invalidation connection closed"),
                    _ = &mut reader_connection => break Ended::Lost("reading connection closed"),
                    _ = heartbeat.tick() => {
                        let pings = async {
                            subscriber.ping::<Value>(None).await?;
                            reader.ping::<Value>(None).await
                        };
                        if !matches!(tokio::time::timeout(HEARTBEAT, pings).await, Ok(Ok(_))) {
                            break Ended::Lost("no answer to a heartbeat");
                        }
                    }
                    () = shutdown.cancelled() => break Ended::Shutdown,
                }
            };
            Ok::<_, Error>(ended)
        }
        .await;
        // Whatever ended it: fills stop using this connection, and nothing it tracked is kept.
        self.publish(None);
        if ended.is_ok() {
            self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        }
        self.flush();
        for client in [&reader, &subscriber] {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
        }
        subscriber_connection.abort();
        reader_connection.abort();
        ended
    }
}

/// A connection of the tracking pair: RESP2, and no reconnect policy (a connection's tracking
/// state dies with it, so a new pair is made, and tracking enabled, before it takes fills).
fn tracking_client(fred: &FredConfig, timeout: Duration) -> Result<Client, Error> {
    let mut fred = fred.clone();
    fred.version = RespVersion::RESP2;
    fred.fail_fast = true;
    dedicated_builder(fred, timeout, INVALIDATION_BUFFER)
        .build()
        .map_err(|err| Error::Internal(format!("building a near cache connection: {err}")))
}

/// Why a tracking connection's life ended.
enum Ended {
    /// The process is shutting down.
    Shutdown,
    /// The connection was lost; why.
    Lost(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: usize, max_bytes: usize, prefixes: &[&str]) -> NearCache {
        NearCache::new(NearCacheSettings {
            max_entries,
            max_bytes,
            max_age: Duration::from_secs(60),
            prefixes: prefixes.iter().map(|prefix| (*prefix).to_owned()).collect(),
        })
    }

    fn entry(value: &'static [u8], ttl: Option<Duration>) -> Entry {
        let now = Instant::now();
        Entry {
            holding: Holding::Value(Bytes::from_static(value)),
            key_expires_at: ttl.map(|ttl| now + ttl),
            fresh_until: now + ttl.unwrap_or(Duration::from_secs(60)),
            read_at: 1,
        }
    }

    #[test]
    fn reads_use_the_cache_when_asked_or_under_a_prefix_and_only_when_it_is_on() {
        let on = cache(10, 1 << 20, &["cfg:", "feature:"]);
        assert!(on.wanted("anything", true));
        assert!(on.wanted("cfg:flags", false) && on.wanted("feature:x", false));
        assert!(!on.wanted("other", false) && !on.wanted("cf", false));
        let off = cache(0, 1 << 20, &["cfg:"]);
        assert!(!off.enabled() && !off.wanted("cfg:flags", true));
        assert!(
            NearCache::disabled()
                .lookup(&Bytes::from_static(b"k"))
                .is_none()
        );
    }

    #[test]
    fn an_entry_charges_its_size_and_at_least_the_entry_share_of_the_bytes() {
        let weight = EntryWeight { floor: 500 };
        let key = Bytes::from_static(b"key");
        use quick_cache::Weighter as _;
        assert_eq!(weight.weight(&key, &entry(b"v", None)), 500);
        let large = Entry {
            holding: Holding::Value(Bytes::from(vec![0; 1000])),
            ..entry(b"", None)
        };
        assert_eq!(
            weight.weight(&key, &large),
            (3 + 1000 + ENTRY_OVERHEAD) as u64
        );
    }

    #[test]
    fn invalidations_drop_keys_and_an_empty_one_drops_everything() {
        let near = cache(10, 1 << 20, &[]);
        let entries = near.cache().unwrap();
        for key in [&b"a"[..], b"b", b"c"] {
            entries.insert(Bytes::copy_from_slice(key), entry(b"v", None));
        }
        near.invalidated(&[Key::from("a")]);
        assert!(near.lookup(&Bytes::from_static(b"a")).is_none());
        assert!(near.lookup(&Bytes::from_static(b"b")).is_some());
        let generation = near.generation.load(Ordering::Acquire);
        near.invalidated(&[]);
        assert!(near.lookup(&Bytes::from_static(b"b")).is_none());
        assert_eq!(near.generation.load(Ordering::Acquire), generation + 1);
        let snapshot = near.snapshot();
        assert_eq!(
            (snapshot.entries, snapshot.invalidations, snapshot.flushes),
            (0, 1, 1)
        );
        assert_eq!((snapshot.hits, snapshot.misses), (1, 2));
    }

    #[test]
    fn an_entry_past_its_ttl_is_a_miss_and_reports_what_is_left() {
        let near = cache(10, 1 << 20, &[]);
        let entries = near.cache().unwrap();
        let expired = Entry {
            fresh_until: Instant::now(),
            ..entry(b"v", Some(Duration::ZERO))
        };
        entries.insert(Bytes::from_static(b"old"), expired);
        assert!(near.lookup(&Bytes::from_static(b"old")).is_none());
        assert!(entries.is_empty(), "the expired entry is dropped");
        let living = entry(b"v", Some(Duration::from_secs(10)));
        let now = Instant::now();
        assert!(
            matches!(living.ttl(now), TtlState::Expiring(left) if left <= Duration::from_secs(10))
        );
        assert_eq!(entry(b"v", None).ttl(now), TtlState::Persistent);
        let absent = Entry {
            holding: Holding::Absent,
            ..entry(b"", None)
        };
        assert_eq!(absent.ttl(now), TtlState::Missing);
        assert_eq!(absent.value(), None);
    }

    #[test]
    fn a_fill_is_refused_while_no_tracking_connection_is_up() {
        let near = cache(10, 1 << 20, &[]);
        assert!(near.ticket(&[Bytes::from_static(b"k")]).is_none());
    }
}
