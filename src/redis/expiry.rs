//! The key-event feed behind KeyValue.WatchExpirations: one writer records, every replica
//! reads, each fans out in-process.
//!
//! - **Writer.** While anyone watches (any replica refreshes an interest key), the gateway
//!   processes elect one writer (a lease key, renewed every second). The writer subscribes to
//!   Redis' key*event* channels (expired, evicted, del) on its own connection and appends each
//!   event, in batches, to a capped Redis stream ([`EVENTS_KEY`], about `--expiry-retention`
//!   entries). When its subscription is re-established, or when it takes over from a writer
//!   that was live, it appends a `gap` marker: pub/sub loses what happens meanwhile.
//! - **Readers.** Every process with watchers reads the stream from its last entry id on a
//!   dedicated connection (XREAD BLOCK) and broadcasts each entry to its local watchers through
//!   one bounded ring ([`tokio::sync::broadcast`]): a watcher that falls behind loses the oldest
//!   entries and is told how many (`gap{lagged}`), and never slows the others. This part is
//!   [`super::fanout`], shared with the session-endings feed.
//! - **Resume.** An entry's id is the cursor a client gets with every event; reconnecting with
//!   `resume_after` replays the retained entries after it (XRANGE) before going live, on any
//!   replica. Recording continues `--expiry-resume-window` after the last watcher leaves, so a
//!   client that reconnects within it misses nothing that is still retained.
//!
//! Keyspace notifications are node-local: on a cluster the writer subscribes on every primary,
//! on each node that connects later (a promoted replica), and checks every two seconds whether
//! a resharding put slots on a primary it has no connection to yet.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Value;
use fred::types::config::Config as FredConfig;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use super::fanout::Cursor;
use super::fanout::{FanoutWatch, StreamEntry, StreamFanout, dedicated_client, lock};

use super::keyspace::KeyspaceEvents;
use super::locks::random_id;
use super::scripts::{EXPIRY_APPEND, EXPIRY_WRITER};
use super::slots::node_name;
use super::{Call, Namespace, Redis, primaries_or_one, reply_array, reply_i64};
use crate::error::{Error, Idempotency};

/// The capped stream of recorded key events.
pub const EVENTS_KEY: &str = "__gw:expiry:events";
/// The writer's lease (with [`LIVE_KEY`] in one script, so one cluster slot: `{writer}`).
const WRITER_KEY: &str = "__gw:expiry:{writer}";
/// Present while a writer is subscribed.
const LIVE_KEY: &str = "__gw:expiry:{writer}:live";
/// Present while someone watches, and for the resume window after.
const INTEREST_KEY: &str = "__gw:expiry:interest";
/// The writer's lease and live flag last this long without renewal.
const WRITER_LEASE: Duration = Duration::from_secs(3);
/// How often the writer election and interest run.
const TICK: Duration = Duration::from_millis(500);
/// How often a watcher's call may have a keyspace-flags refusal checked again.
const KEYSPACE_RECHECK: Duration = Duration::from_secs(5);
/// How often the recorder on a cluster checks for primaries it is not subscribed at.
const TOPOLOGY_CHECK: Duration = Duration::from_secs(2);
/// How often missing keyspace flags are looked at again while someone is interested.
const FLAGS_RECHECK: Duration = Duration::from_secs(30);
/// Slots in each of fred's nine preallocated notification channels for the writer's
/// subscriber, held only while this process records. fred hands over all the events of one
/// socket read before the writer runs again, so this bounds the burst one Redis command may
/// cause (a DEL of 10,000 keys overflowed 8,192 here; 16,384 costs about 11 MiB, 65,536 cost
/// 45 MiB). Past it the writer records `gap{overloaded}`.
const SUBSCRIBER_BUFFER: usize = 16_384;
/// Key events waiting to be appended; beyond this they are dropped and `gap{overloaded}` is
/// recorded. Grows only with an actual backlog.
const MAX_BACKLOG: usize = 200_000;
/// Events appended per script run.
const BATCH: usize = 256;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Its TTL ran out.
    Expired,
    /// Evicted under maxmemory.
    Evicted,
    /// Deleted by a client.
    Deleted,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Evicted => "evicted",
            Self::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "expired" => Some(Self::Expired),
            "evicted" => Some(Self::Evicted),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }

    /// The kind of a key*event* notification's operation (its channel's last part, as fred
    /// parses `__keyevent@0__:expired` …).
    fn of_operation(operation: &str) -> Option<Self> {
        match operation {
            "expired" => Some(Self::Expired),
            "evicted" => Some(Self::Evicted),
            "del" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// A key event.
    Event {
        /// Its position.
        cursor: Cursor,
        /// What happened.
        kind: EventKind,
        /// The full Redis key (namespace included).
        key: Bytes,
        /// When the writer received it, ms since the epoch.
        observed_ms: i64,
    },
    /// Events may be missing before this point.
    Gap {
        /// Its position.
        cursor: Cursor,
        /// Why.
        reason: String,
    },
}

impl StreamEntry for FeedItem {
    fn cursor(&self) -> Cursor {
        match self {
            Self::Event { cursor, .. } | Self::Gap { cursor, .. } => *cursor,
        }
    }
}

/// Settings of the feed.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Add missing notify-keyspace-events flags (CONFIG SET).
    pub configure: bool,
    /// About how many entries the stream keeps.
    pub retention: u64,
    /// How long recording continues after the last watcher left.
    pub resume_window: Duration,
    /// The Redis database whose events are watched.
    pub database: u8,
}

/// The process's key-event feed (see the module docs).
#[derive(Debug)]
pub struct ExpiryFeed {
    settings: FeedSettings,
    /// The reader of the stream and the local watchers.
    fanout: Arc<StreamFanout<FeedItem>>,
    /// What Redis' notify-keyspace-events allow, once known.
    keyspace: watch::Sender<Option<KeyspaceEvents>>,
    /// When a watcher last had a refusal checked again.
    keyspace_checked: Mutex<Option<std::time::Instant>>,
}

/// A watcher's hold on the feed; dropping it unregisters the watcher.
pub type Watch = FanoutWatch<FeedItem>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

impl ExpiryFeed {
    /// A feed with `settings`; [`ExpiryFeed::run`] starts it.
    pub fn new(settings: FeedSettings) -> Self {
        Self {
            settings,
            fanout: Arc::new(StreamFanout::new(EVENTS_KEY, parse_entries)),
            keyspace: watch::Sender::new(None),
            keyspace_checked: Mutex::new(None),
        }
    }

    /// Watchers of this process now.
    pub fn watchers(&self) -> usize {
        self.fanout.watchers()
    }

    /// What the keyspace flags allow, if known yet.
    pub fn keyspace(&self) -> Option<KeyspaceEvents> {
        self.keyspace.borrow().clone()
    }

    /// As [`ExpiryFeed::keyspace`], but a refusal older than a few seconds is checked again
    /// first, so a gateway notices flags an operator has since enabled.
    pub async fn keyspace_now(&self, redis: &Redis) -> Option<KeyspaceEvents> {
        let state = self.keyspace();
        if let Some(KeyspaceEvents::Unavailable(_)) = state {
            let due = {
                let mut checked = lock(&self.keyspace_checked);
                let due = checked.is_none_or(|at| at.elapsed() >= KEYSPACE_RECHECK);
                if due {
                    *checked = Some(std::time::Instant::now());
                }
                due
            };
            if due && let Ok(fresh) = self.keyspace_check(redis).await {
                self.keyspace.send_replace(Some(fresh.clone()));
                return Some(fresh);
            }
        }
        state
    }

    /// Registers a watcher, which starts recording and reading; [`Watch::subscribe`] once
    /// [`ExpiryFeed::wait_until_live`] says they run.
    pub fn watch(&self) -> Watch {
        self.fanout.watch()
    }

    /// The stream and its reader.
    pub fn fanout(&self) -> &StreamFanout<FeedItem> {
        &self.fanout
    }

    /// Waits until events are being recorded and read, so that a key expiring from now on is
    /// delivered; the cursor to resume after, as of then. Fails with UNAVAILABLE after
    /// `within`.
    pub async fn wait_until_live(&self, redis: &Redis, within: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + within;
        let call = Call::new(None, redis.command_timeout(), Namespace::default());
        let mut ready = self.fanout.ready();
        loop {
            if let Some(KeyspaceEvents::Unavailable(message)) = self.keyspace() {
                return Err(Error::FailedPrecondition(message));
            }
            if *ready.borrow_and_update() {
                let live: i64 = redis
                    .run(&call, Idempotency::Idempotent, |client| async move {
                        client.exists(LIVE_KEY).await
                    })
                    .await?;
                if live == 1 {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    message: "the gateway could not start recording key events in time; retry"
                        .into(),
                    outcome_unknown: false,
                });
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), ready.changed()).await;
        }
    }

    /// Runs the writer election, the interest refresh and the reader until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        redis: Redis,
        fred: FredConfig,
        timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let reader = tokio::spawn(self.fanout.clone().read(
            fred.clone(),
            timeout,
            shutdown.clone(),
        ));
        match self.keyspace_check(&redis).await {
            Ok(state) => {
                if let KeyspaceEvents::Unavailable(message) = &state {
                    tracing::warn!("{message}");
                }
                self.keyspace.send_replace(Some(state));
            }
            Err(err) => tracing::debug!(error = %err, "keyspace flags not checked yet"),
        }
        self.write(redis, fred, timeout, shutdown).await;
        let _ = reader.await;
    }

    async fn keyspace_check(&self, redis: &Redis) -> Result<KeyspaceEvents, Error> {
        redis.ensure_keyspace_events(self.settings.configure).await
    }

    /// The writer side: election, interest, and (while elected) the subscription.
    async fn write(
        self: &Arc<Self>,
        redis: Redis,
        fred: FredConfig,
        timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let id = random_id();
        let call = || Call::new(None, redis.command_timeout(), Namespace::default());
        let mut subscription: Option<Subscription> = None;
        let mut retry_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = self.fanout.watchers_changed() => {}
                () = shutdown.cancelled() => break,
            }
            let window = self.settings.resume_window.as_millis() as u64;
            let interested = if self.watchers() > 0 {
                let refreshed = redis
                    .run(&call(), Idempotency::Idempotent, |client| async move {
                        client
                            .set::<(), _, _>(
                                INTEREST_KEY,
                                1,
                                Some(Expiration::PX(window.max(1) as i64)),
                                None,
                                false,
                            )
                            .await
                    })
                    .await;
                if let Err(err) = refreshed {
                    tracing::debug!(error = %err, "refreshing key-event interest failed");
                }
                true
            } else {
                redis
                    .run(&call(), Idempotency::Idempotent, |client| async move {
                        client.exists::<i64, _>(INTEREST_KEY).await
                    })
                    .await
                    .map(|exists| exists == 1)
                    .unwrap_or(subscription.is_some())
            };
            if !interested {
                if let Some(ended) = subscription.take() {
                    ended.stop(&redis, &id).await;
                }
                continue;
            }
            let elected = redis
                .eval(
                    &call(),
                    Idempotency::AtMostOnce,
                    &EXPIRY_WRITER,
                    vec![WRITER_KEY.into(), LIVE_KEY.into()],
                    vec![
                        id.as_str().into(),
                        (WRITER_LEASE.as_millis() as i64).to_string().into(),
                    ],
                )
                .await
                .and_then(reply_i64);
            match elected {
                Ok(0) => {
                    if let Some(ended) = subscription.take() {
                        tracing::info!("another gateway records key events now");
                        ended.abort();
                    }
                }
                Ok(outcome) => {
                    if subscription.is_none() {
                        if tokio::time::Instant::now() < retry_at {
                            continue;
                        }
                        match self.subscribe(&redis, &fred, timeout, outcome == 3).await {
                            Ok(started) => subscription = Some(started),
                            // Flags missing and not ours to set: said once at start and to each
                            // watcher; look again now and then (an operator may enable them).
                            Err(Error::FailedPrecondition(_)) => {
                                retry_at = tokio::time::Instant::now() + FLAGS_RECHECK;
                                continue;
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "recording key events failed to start; retrying");
                                retry_at = tokio::time::Instant::now() + TICK * 4;
                                continue;
                            }
                        }
                    }
                    let live = redis
                        .run(&call(), Idempotency::Idempotent, |client| {
                            let id = id.clone();
                            async move {
                                client
                                    .set::<(), _, _>(
                                        LIVE_KEY,
                                        id,
                                        Some(Expiration::PX(WRITER_LEASE.as_millis() as i64)),
                                        None,
                                        false,
                                    )
                                    .await
                            }
                        })
                        .await;
                    if let Err(err) = live {
                        tracing::debug!(error = %err, "renewing the live flag failed");
                    }
                }
                Err(err) => tracing::debug!(error = %err, "the key-event writer election failed"),
            }
        }
        if let Some(ended) = subscription.take() {
            ended.stop(&redis, &id).await;
        }
    }

    /// Checks the flags, subscribes to the key-event channels and starts appending.
    async fn subscribe(
        self: &Arc<Self>,
        redis: &Redis,
        fred: &FredConfig,
        timeout: Duration,
        took_over: bool,
    ) -> Result<Subscription, Error> {
        let state = self.keyspace_check(redis).await?;
        self.keyspace.send_replace(Some(state.clone()));
        if let KeyspaceEvents::Unavailable(message) = state {
            return Err(Error::FailedPrecondition(message));
        }
        // Key events arrive in bursts (a sweep expiring thousands of keys); the recorder
        // drains them in batches, and what overflows this is reported as a gap.
        let client = dedicated_client(fred, timeout, SUBSCRIBER_BUFFER)?;
        // fred routes key-event messages to its keyspace channel, not to `message_rx`.
        let mut messages = client.keyspace_event_rx();
        let mut connections = client.reconnect_rx();
        let connection = client.connect();
        let db = self.settings.database;
        let channels: Vec<String> = ["expired", "evicted", "del"]
            .iter()
            .map(|event| format!("__keyevent@{db}__:{event}"))
            .collect();
        let subscribed = async {
            client
                .wait_for_connect()
                .await
                .map_err(|err| Error::Internal(format!("connecting the subscriber: {err}")))?;
            // The first connections were announced too (one per primary on a cluster).
            while connections.try_recv().is_ok() {}
            // Key events are node-local: on a cluster, subscribe on every primary.
            for node in primaries_or_one(&client) {
                subscribe_on(&client, node, &channels)
                    .await
                    .map_err(|err| Error::Internal(format!("subscribing to key events: {err}")))?;
            }
            Ok(())
        };
        if let Err(err) = tokio::time::timeout(timeout, subscribed)
            .await
            .unwrap_or_else(|_| Err(Error::redis_unreachable()))
        {
            connection.abort();
            return Err(err);
        }
        tracing::info!(took_over, "recording key events");
        let feed = self.clone();
        let redis = redis.clone();
        let subscriber = client.clone();
        let clustered = client.is_clustered();
        let task = tokio::spawn(async move {
            // On a cluster: whether a primary serves slots that the subscriber has no
            // connection to (a resharding onto a new node); fred learns of it only by a
            // redirection, which a subscriber never gets.
            let mut topology = tokio::time::interval(TOPOLOGY_CHECK);
            topology.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Events move from fred's fixed buffer into this backlog at once, while one append
            // (a batch per round trip) is in flight: memory follows the actual backlog.
            let mut pending: VecDeque<(EventKind, Bytes, i64)> = VecDeque::new();
            let mut overflowed = false;
            let mut appending: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = None;
            if took_over {
                feed.append_gap(&redis, "reconnected").await;
            }
            loop {
                if appending.is_none() && (overflowed || !pending.is_empty()) {
                    let feed = feed.clone();
                    let redis = redis.clone();
                    let gap = std::mem::take(&mut overflowed);
                    let take = pending.len().min(BATCH);
                    let batch: Vec<_> = pending.drain(..take).collect();
                    appending = Some(Box::pin(async move {
                        if gap {
                            feed.append_gap(&redis, "overloaded").await;
                        }
                        feed.append(&redis, batch).await;
                    }));
                }
                tokio::select! {
                    biased;
                    message = messages.recv() => match message {
                        Ok(event) => {
                            if pending.len() >= MAX_BACKLOG {
                                overflowed = true;
                            } else if let Some(kind) = EventKind::of_operation(&event.operation) {
                                pending.push_back((kind, event.key.inner().clone(), now_ms()));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "the key-event recorder fell behind Redis");
                            overflowed = true;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    () = async {
                        if let Some(append) = appending.as_mut() {
                            append.await;
                        }
                    }, if appending.is_some() => appending = None,
                    _ = topology.tick(), if clustered => {
                        follow_new_primaries(&redis, &subscriber).await;
                    }
                    connected = connections.recv() => {
                        let Ok(server) = connected else {
                            break;
                        };
                        // A new connection: Redis may have restarted (flags reset) and pub/sub
                        // lost what happened meanwhile. The command pool may still be
                        // reconnecting, so keep trying.
                        let mut pause = Duration::from_millis(100);
                        loop {
                            match feed.keyspace_check(&redis).await {
                                Ok(state) => {
                                    feed.keyspace.send_replace(Some(state));
                                    break;
                                }
                                Err(err) => {
                                    tracing::debug!(error = %err, "re-checking keyspace flags failed; retrying");
                                    tokio::time::sleep(pause).await;
                                    pause = (pause * 2).min(Duration::from_secs(2));
                                }
                            }
                        }
                        // On a cluster, the node that (re)connected: after a failover, the
                        // promoted replica.
                        let node = subscriber.is_clustered().then_some(server);
                        if let Err(err) = subscribe_on(&subscriber, node, &channels).await {
                            tracing::warn!(error = %err, "resubscribing to key events failed");
                        }
                        feed.append_gap(&redis, "reconnected").await;
                    }
                }
            }
        });
        Ok(Subscription {
            client,
            task,
            connection,
        })
    }

    /// Appends events to the stream (one script run per batch).
    async fn append(&self, redis: &Redis, events: Vec<(EventKind, Bytes, i64)>) {
        if events.is_empty() {
            return;
        }
        let mut args: Vec<Value> = Vec::with_capacity(1 + events.len() * 3);
        args.push(self.settings.retention.to_string().into());
        for (kind, key, observed) in events {
            args.push(kind.as_str().into());
            args.push(Value::Bytes(key));
            args.push(observed.to_string().into());
        }
        let call = Call::new(None, redis.command_timeout(), Namespace::default());
        if let Err(err) = redis
            .eval(
                &call,
                Idempotency::AtMostOnce,
                &EXPIRY_APPEND,
                vec![EVENTS_KEY.into()],
                args,
            )
            .await
        {
            tracing::warn!(error = %err, "recording key events failed; watchers get a gap");
        }
    }

    /// Appends a gap marker, retrying while Redis is unreachable (a gap must not be lost).
    async fn append_gap(&self, redis: &Redis, reason: &str) {
        let call = Call::new(None, redis.command_timeout(), Namespace::default());
        let observed = now_ms().to_string();
        let mut pause = Duration::from_millis(100);
        for _ in 0..30 {
            let args = vec![
                self.settings.retention.to_string().into(),
                "gap".into(),
                reason.into(),
                observed.as_str().into(),
            ];
            match redis
                .eval(
                    &call,
                    Idempotency::AtMostOnce,
                    &EXPIRY_APPEND,
                    vec![EVENTS_KEY.into()],
                    args,
                )
                .await
            {
                Ok(_) => return,
                Err(err) => {
                    tracing::debug!(error = %err, "recording a key-event gap failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        tracing::warn!(reason, "recording a key-event gap failed");
    }
}

/// The writer's subscription while elected.
struct Subscription {
    client: Client,
    task: tokio::task::JoinHandle<()>,
    connection: tokio::task::JoinHandle<Result<(), fred::error::Error>>,
}

impl Subscription {
    /// Ends the subscription (lost the election): no goodbye to Redis needed.
    fn abort(self) {
        self.task.abort();
        self.connection.abort();
    }

    /// Ends the subscription and gives up the writer lease so another process can take over
    /// at once (the live flag runs out by itself, so the next writer reports a gap).
    async fn stop(self, redis: &Redis, id: &str) {
        self.task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.quit()).await;
        self.connection.abort();
        let call = Call::new(None, redis.command_timeout(), Namespace::default());
        let released = redis
            .run(&call, Idempotency::Idempotent, |client| async move {
                let current: Option<String> = client.get(WRITER_KEY).await?;
                if current.as_deref() == Some(id) {
                    client.del::<i64, _>(WRITER_KEY).await?;
                }
                Ok(())
            })
            .await;
        if let Err(err) = released {
            tracing::debug!(error = %err, "giving up the writer lease failed; it runs out");
        }
    }
}

/// Reads XRANGE-style entries: `[[id, [field, value, …]], …]`.
pub fn parse_entries(reply: Value) -> Result<Vec<FeedItem>, Error> {
    let mut items = Vec::new();
    for entry in reply_array(reply)? {
        let mut parts = reply_array(entry)?.into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(cursor) = id.as_str().and_then(|id| id.parse().ok()) else {
            continue;
        };
        let (mut kind, mut key, mut observed) = (None, None, 0);
        let mut fields = reply_array(fields)?.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            match name.as_str().as_deref() {
                Some("k") => kind = value.as_string(),
                Some("key") => key = value.into_bytes(),
                Some("t") => observed = value.as_i64().unwrap_or_default(),
                _ => {}
            }
        }
        let (Some(kind), Some(key)) = (kind, key) else {
            continue;
        };
        if kind == "gap" {
            items.push(FeedItem::Gap {
                cursor,
                reason: String::from_utf8_lossy(&key).into_owned(),
            });
        } else if let Some(kind) = EventKind::parse(&kind) {
            items.push(FeedItem::Event {
                cursor,
                kind,
                key,
                observed_ms: observed,
            });
        }
    }
    Ok(items)
}

/// When the cluster reports a primary that `subscriber` has no connection to, has the pool
/// and the subscriber read the slot map again: fred then connects the subscriber to the new
/// node and announces it, and the recorder subscribes there (and sets the keyspace flags on
/// it) as on any reconnection.
async fn follow_new_primaries(redis: &Redis, subscriber: &Client) {
    let Ok(reported) = redis.cluster_primaries(Duration::from_secs(1)).await else {
        return;
    };
    let known: std::collections::BTreeSet<String> = primaries_or_one(subscriber)
        .iter()
        .flatten()
        .map(node_name)
        .collect();
    if reported.is_subset(&known) {
        return;
    }
    tracing::info!(
        ?reported,
        ?known,
        "the cluster's primaries changed; following them for key events"
    );
    redis.resync_cluster().await;
    if let Err(err) = subscriber.sync_cluster().await {
        tracing::warn!(error = %err, "re-reading the cluster's slot map for key events failed");
    }
}

/// Subscribes `client` to `channels` on cluster node `node`, or on its one connection.
async fn subscribe_on(
    client: &Client,
    node: Option<Server>,
    channels: &[String],
) -> Result<(), fred::error::Error> {
    match node {
        Some(node) => {
            client
                .with_cluster_node(node)
                .subscribe(channels.to_vec())
                .await
        }
        None => client.subscribe(channels.to_vec()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_event_operations_name_their_kind() {
        assert_eq!(EventKind::of_operation("expired"), Some(EventKind::Expired));
        assert_eq!(EventKind::of_operation("evicted"), Some(EventKind::Evicted));
        assert_eq!(EventKind::of_operation("del"), Some(EventKind::Deleted));
        assert_eq!(EventKind::of_operation("set"), None);
    }
}
