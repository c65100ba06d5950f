//! One process's view of a capped Redis stream of events, shared by every feed that works the
//! same way (the key events of WatchExpirations, the session endings of WatchEnded).
//!
//! While the process has watchers, one reader follows the stream from its last entry on a
//! dedicated connection (XREAD BLOCK) and broadcasts each entry to the local watchers through
//! one bounded ring ([`tokio::sync::broadcast`]): a watcher that falls behind loses the oldest
//! entries and learns how many (`RecvError::Lagged`), and never slows the others. An entry's
//! stream id is its [`Cursor`]; a client resumes by replaying the retained entries after one
//! (XRANGE, [`StreamFanout::entries_after`]), checking first whether some were trimmed
//! ([`StreamFanout::truncated_after`]).

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use fred::types::config::{Config as FredConfig, TcpConfig};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::{Call, Redis, reply_array};
use crate::error::{Error, Idempotency};

/// Entries held for local watchers; a watcher further behind is told it lagged.
pub const LOCAL_BUFFER: usize = 4096;
/// Entries read per XREAD.
const BATCH: usize = 256;
/// How long one XREAD blocks waiting for entries.
const READ_BLOCK: Duration = Duration::from_secs(1);

/// A position in an event stream (a Redis stream entry id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for Cursor {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (ms, seq) = text.split_once('-').ok_or(())?;
        Ok(Self {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

/// An entry of an event stream, as a feed parses it.
pub trait StreamEntry: Send + Sync + 'static {
    /// Its position.
    fn cursor(&self) -> Cursor;
}

/// Reads XRANGE-style entries (`[[id, [field, value, …]], …]`) into a feed's items; entries
/// it does not understand are skipped.
pub type ParseEntries<T> = fn(Value) -> Result<Vec<T>, Error>;

/// One process's reader of the stream `key` and its local watchers (see the module docs).
#[derive(Debug)]
pub struct StreamFanout<T> {
    /// The stream.
    key: &'static str,
    /// How its entries become items.
    parse: ParseEntries<T>,
    sender: broadcast::Sender<Arc<T>>,
    /// The last entry broadcast; read together with subscribing, so a new watcher's cursor
    /// and the entries it receives leave nothing out.
    last: Mutex<Option<Cursor>>,
    watchers: AtomicUsize,
    watchers_changed: Notify,
    /// The reader has its starting point and is reading.
    reader_ready: watch::Sender<bool>,
}

/// A watcher's hold on a fan-out; dropping it unregisters the watcher.
pub struct FanoutWatch<T> {
    fanout: Arc<StreamFanout<T>>,
}

impl<T> FanoutWatch<T> {
    /// The entries broadcast from now on, and the position of the last one before them (every
    /// entry up to it is in the stream, for a replay).
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<T>>, Cursor) {
        let last = lock(&self.fanout.last);
        let receiver = self.fanout.sender.subscribe();
        (receiver, last.unwrap_or_default())
    }
}

impl<T> Drop for FanoutWatch<T> {
    fn drop(&mut self) {
        self.fanout.watchers.fetch_sub(1, Ordering::Relaxed);
        self.fanout.watchers_changed.notify_waiters();
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a plain read or write: a panic cannot leave it half done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Routes a command whose key is not its first argument (XREAD, XINFO) to `key`'s node.
fn slot_of_key(key: &str) -> fred::types::ClusterHash {
    fred::types::ClusterHash::Custom(super::slots::slot_of(key.as_bytes()))
}

/// A dedicated connection (pub/sub or blocking reads), reconnecting forever, whose event
/// channels buffer `events` messages.
pub fn dedicated_client(
    fred: &FredConfig,
    timeout: Duration,
    events: usize,
) -> Result<Client, Error> {
    dedicated_builder(fred.clone(), timeout, events)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|err| Error::Internal(format!("building a Redis client: {err}")))
}

/// The builder of a dedicated connection: `timeout` to connect and for every command, commands
/// sent once (never replayed after a reconnect), no Nagle delay, event channels of `events`
/// messages; no reconnect policy yet.
pub fn dedicated_builder(fred: FredConfig, timeout: Duration, events: usize) -> Builder {
    let mut builder = Builder::from_config(fred);
    builder
        .with_connection_config(|connection| {
            connection.connection_timeout = timeout;
            connection.internal_command_timeout = timeout;
            connection.max_command_attempts = 1;
            // As the pool: a redirection is an error saying so (see `Redis::connect`).
            connection.max_redirections = 0;
            connection.tcp = TcpConfig {
                nodelay: Some(true),
                ..TcpConfig::default()
            };
        })
        .with_performance_config(|performance| {
            performance.broadcast_channel_capacity = events;
        });
    builder
}

impl<T: StreamEntry> StreamFanout<T> {
    /// A fan-out of stream `key`, its entries read by `parse`; [`StreamFanout::read`] runs it.
    pub fn new(key: &'static str, parse: ParseEntries<T>) -> Self {
        Self {
            key,
            parse,
            sender: broadcast::channel(LOCAL_BUFFER).0,
            last: Mutex::new(None),
            watchers: AtomicUsize::new(0),
            watchers_changed: Notify::new(),
            reader_ready: watch::Sender::new(false),
        }
    }

    /// Watchers of this process now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Resolves when a watcher comes or goes.
    pub async fn watchers_changed(&self) {
        self.watchers_changed.notified().await;
    }

    /// Registers a watcher, which starts the reader; [`FanoutWatch::subscribe`] once
    /// [`StreamFanout::ready`] says it reads.
    pub fn watch(self: &Arc<Self>) -> FanoutWatch<T> {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        self.watchers_changed.notify_waiters();
        FanoutWatch {
            fanout: self.clone(),
        }
    }

    /// Whether the reader has its starting point and reads, and its changes.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.reader_ready.subscribe()
    }

    /// Waits until the reader reads (so an entry appended from now on is delivered); fails
    /// with UNAVAILABLE after `within`, naming `what` is not being read.
    pub async fn wait_ready(&self, within: Duration, what: &str) -> Result<(), Error> {
        let mut ready = self.ready();
        let waited = tokio::time::timeout(within, ready.wait_for(|ready| *ready)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Unavailable {
                message: format!("the gateway could not start reading {what} in time; retry"),
                outcome_unknown: false,
            }),
        }
    }

    /// The reader: while this process has watchers, follows the stream and broadcasts, until
    /// `shutdown`.
    pub async fn read(
        self: Arc<Self>,
        fred: FredConfig,
        timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let client = match dedicated_client(&fred, timeout, 32) {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, stream = self.key, "stream reading disabled");
                return;
            }
        };
        // Connected on the first watcher, so a gateway nobody watches holds no extra connection.
        let mut connection = None;
        let mut from: Option<Cursor> = None;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if self.watchers() > 0 && connection.is_none() {
                connection = Some(client.connect());
            }
            if self.watchers() == 0 {
                self.reader_ready.send_replace(false);
                from = None;
                tokio::select! {
                    () = self.watchers_changed.notified() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let start = match from {
                Some(cursor) => cursor,
                None => match self.last_entry(&client, timeout).await {
                    Ok(last) => {
                        *lock(&self.last) = Some(last);
                        self.reader_ready.send_replace(true);
                        from = Some(last);
                        last
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, stream = self.key, "reading the stream failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                },
            };
            let read = tokio::select! {
                read = self.read_after(&client, start, timeout) => read,
                () = shutdown.cancelled() => break,
            };
            match read {
                Ok(items) => {
                    for item in items {
                        let cursor = item.cursor();
                        let mut last = lock(&self.last);
                        *last = Some(cursor);
                        // No receiver is fine: the watchers may have just left.
                        let _ = self.sender.send(Arc::new(item));
                        drop(last);
                        from = Some(cursor);
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, stream = self.key, "reading the stream failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.reader_ready.send_replace(false);
        if let Some(connection) = connection {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
            connection.abort();
        }
    }

    /// The id of the stream's last entry, or 0-0 when it is empty or missing.
    async fn last_entry(&self, client: &Client, timeout: Duration) -> Result<Cursor, Error> {
        let reply: Value = tokio::time::timeout(
            timeout,
            client.custom(
                fred::cmd!("XREVRANGE"),
                vec![self.key, "+", "-", "COUNT", "1"],
            ),
        )
        .await
        .map_err(|_| Error::redis_unreachable())?
        .map_err(|err| Error::Internal(format!("XREVRANGE: {err}")))?;
        let mut last = Cursor::default();
        for entry in reply_array(reply)? {
            let id = reply_array(entry)?.into_iter().next();
            if let Some(cursor) = id.and_then(|id| id.as_str().and_then(|id| id.parse().ok())) {
                last = cursor;
            }
        }
        Ok(last)
    }

    /// Entries after `after`, waiting up to [`READ_BLOCK`] for some.
    async fn read_after(
        &self,
        client: &Client,
        after: Cursor,
        timeout: Duration,
    ) -> Result<Vec<T>, Error> {
        let block = READ_BLOCK.as_millis().to_string();
        let count = BATCH.to_string();
        let after = after.to_string();
        let reply: Value = tokio::time::timeout(
            READ_BLOCK + timeout,
            client.custom(
                fred::cmd!("XREAD", hash: slot_of_key(self.key)),
                vec![
                    "COUNT", &count, "BLOCK", &block, "STREAMS", self.key, &after,
                ],
            ),
        )
        .await
        .map_err(|_| Error::redis_unreachable())?
        .map_err(|err| Error::Internal(format!("XREAD: {err}")))?;
        // [[stream, [entries]]] or nil on timeout.
        let Value::Array(streams) = reply else {
            return Ok(Vec::new());
        };
        let mut items = Vec::new();
        for stream in streams {
            let mut parts = reply_array(stream)?.into_iter();
            if let (Some(_name), Some(entries)) = (parts.next(), parts.next()) {
                items.extend((self.parse)(entries)?);
            }
        }
        Ok(items)
    }

    /// Retained entries after `after` (exclusive), up to `count`; fewer than `count` means
    /// the end was reached (entries the feed skips still count).
    pub async fn entries_after(
        &self,
        redis: &Redis,
        call: &Call,
        after: Cursor,
        count: usize,
    ) -> Result<(Vec<T>, bool), Error> {
        let key = self.key;
        let reply = redis
            .run(call, Idempotency::Idempotent, |client| {
                let start = format!("({after}");
                let count = count.to_string();
                async move {
                    client
                        .custom::<Value, _>(
                            fred::cmd!("XRANGE"),
                            vec![key, &start, "+", "COUNT", &count],
                        )
                        .await
                }
            })
            .await?;
        let raw = reply_array(reply)?;
        let done = raw.len() < count;
        Ok(((self.parse)(Value::Array(raw))?, done))
    }

    /// Whether entries after `after` were trimmed from the stream (or it is gone), so a resume
    /// from there misses some.
    pub async fn truncated_after(
        &self,
        redis: &Redis,
        call: &Call,
        after: Cursor,
    ) -> Result<bool, Error> {
        let key = self.key;
        let reply = redis
            .run(call, Idempotency::Idempotent, |client| async move {
                client
                    .custom::<Value, _>(
                        fred::cmd!("XINFO", hash: slot_of_key(key)),
                        vec!["STREAM", key],
                    )
                    .await
            })
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            // No stream: whatever came after `after` is gone.
            Err(Error::Internal(_) | Error::FailedPrecondition(_)) => return Ok(true),
            Err(err) => return Err(err),
        };
        let mut fields = reply_array(reply)?.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            if name.as_str().as_deref() == Some("max-deleted-entry-id") {
                let deleted: Cursor = value
                    .as_str()
                    .and_then(|id| id.parse().ok())
                    .unwrap_or_default();
                return Ok(deleted > after);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_and_round_trip() {
        let a: Cursor = "1700000000000-0".parse().unwrap();
        let b: Cursor = "1700000000000-1".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "1700000000000-1");
        assert!("x".parse::<Cursor>().is_err());
        assert!("1-".parse::<Cursor>().is_err());
    }
}
