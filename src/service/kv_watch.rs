//! KeyValue.WatchExpirations: one watcher's view of the process's key-event feed
//! ([`crate::redis::expiry`]): validation, `subscribed`, the replay of what a resuming client
//! missed, then live events filtered by kind, pattern and namespace, with `gap` messages where
//! events may be missing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::{Context, ResponseStream, Sink, Stats, timestamp};
use crate::error::Error;
use crate::limits::glob_pattern;
use crate::pb;
use crate::pb::key_value_watch_expirations_response::{Event, Expired, Gap, Subscribed};
use crate::redis::expiry::{Cursor, EventKind, FeedItem};
use crate::redis::fanout::StreamEntry;
use crate::redis::glob;
use crate::redis::keys::pattern_is_internal;
use crate::redis::keyspace::KeyspaceEvents;
use crate::redis::{Call, Namespace};

/// How long a new watcher waits for recording to be in place before UNAVAILABLE.
const LIVE_WITHIN: Duration = Duration::from_secs(10);
/// Entries replayed per XRANGE.
const REPLAY_BATCH: usize = 512;

/// What one watcher wants.
struct Filter {
    namespace: Namespace,
    /// The glob, confined to the namespace (matched against the caller's key).
    pattern: Option<Vec<u8>>,
    expired: bool,
    evicted: bool,
    deleted: bool,
}

impl Filter {
    /// The message for `item`, if this watcher wants it.
    fn message(&self, item: &FeedItem) -> Option<pb::KeyValueWatchExpirationsResponse> {
        let event = match item {
            FeedItem::Gap { cursor, reason } => Event::Gap(Gap {
                reason: reason.clone(),
                dropped: 0,
                cursor: cursor.to_string(),
            }),
            FeedItem::Event {
                cursor,
                kind,
                key,
                observed_ms,
            } => {
                let wanted = match kind {
                    EventKind::Expired => self.expired,
                    EventKind::Evicted => self.evicted,
                    EventKind::Deleted => self.deleted,
                };
                if !wanted {
                    return None;
                }
                let name = self.namespace.strip(key)?;
                if let Some(pattern) = &self.pattern
                    && !glob::matches(pattern, name.as_bytes())
                {
                    return None;
                }
                Event::Expired(Expired {
                    key: name.to_owned(),
                    observed_at: Some(timestamp(*observed_ms)),
                    kind: match kind {
                        EventKind::Expired => pb::KeyEventKind::Expired,
                        EventKind::Evicted => pb::KeyEventKind::Evicted,
                        EventKind::Deleted => pb::KeyEventKind::Deleted,
                    }
                    .into(),
                    cursor: cursor.to_string(),
                })
            }
        };
        Some(message(event))
    }
}

fn message(event: Event) -> pb::KeyValueWatchExpirationsResponse {
    pb::KeyValueWatchExpirationsResponse { event: Some(event) }
}

/// Validates the request into a filter and the resume point.
fn filter(
    context: &Context,
    call: &Call,
    request: pb::KeyValueWatchExpirationsRequest,
) -> Result<(Filter, Option<Cursor>), Error> {
    let pattern = match request.pattern.as_str() {
        "" | "*" => None,
        pattern => {
            glob_pattern("pattern", pattern, context.limits().max_key_bytes)?;
            if pattern_is_internal(pattern) {
                return Err(Error::invalid(
                    "pattern",
                    "matches only keys reserved for the gateway's locks and sessions",
                ));
            }
            Some(pattern.as_bytes().to_vec())
        }
    };
    let mut filter = Filter {
        namespace: call.namespace.clone(),
        pattern,
        expired: request.kinds.is_empty(),
        evicted: false,
        deleted: false,
    };
    for (index, kind) in request.kinds.iter().enumerate() {
        match pb::KeyEventKind::try_from(*kind) {
            Ok(pb::KeyEventKind::Expired) => filter.expired = true,
            Ok(pb::KeyEventKind::Evicted) => filter.evicted = true,
            Ok(pb::KeyEventKind::Deleted) => filter.deleted = true,
            Ok(pb::KeyEventKind::Unspecified) => {}
            Err(_) => {
                return Err(Error::invalid(
                    format!("kinds[{index}]"),
                    "must be EXPIRED, EVICTED or DELETED",
                ));
            }
        }
    }
    if !(filter.expired || filter.evicted || filter.deleted) {
        filter.expired = true;
    }
    let resume = match request.resume_after.as_str() {
        "" => None,
        cursor => Some(cursor.parse::<Cursor>().map_err(|()| {
            Error::invalid(
                "resume_after",
                "is not a cursor: pass one from an earlier event, as the stream sent it",
            )
        })?),
    };
    Ok((filter, resume))
}

/// Serves one WatchExpirations call.
pub async fn watch_expirations(
    context: &Context,
    call: Call,
    request: pb::KeyValueWatchExpirationsRequest,
) -> Result<ResponseStream<pb::KeyValueWatchExpirationsResponse>, Error> {
    let (filter, resume) = filter(context, &call, request)?;
    let slot = context.shared.watchers.admit(&call.namespace)?;
    let feed = context.shared.expiry.clone();
    if let Some(KeyspaceEvents::Unavailable(message)) = feed.keyspace_now(&context.redis).await {
        return Err(Error::FailedPrecondition(message));
    }
    let watch = feed.watch();
    // Fails with FAILED_PRECONDITION if the writer finds the flags missing meanwhile.
    feed.wait_until_live(&context.redis, LIVE_WITHIN).await?;
    let (mut receiver, live_from) = watch.subscribe();
    let redis = context.redis.clone();
    let shared = context.shared.clone();
    Ok(context.stream(move |sink| async move {
        // Registered, and counted, for as long as the stream runs.
        let _watch = watch;
        let _slot = slot;
        let _counted = Subscriber::count(&shared.stats);
        let stats = &shared.stats;
        if !sink
            .send(message(Event::Subscribed(Subscribed {
                cursor: live_from.to_string(),
            })))
            .await
        {
            return Ok(());
        }
        // What the client already has is never sent again, also when this process's reader
        // is behind the client's resume point.
        let mut delivered = live_from.max(resume.unwrap_or_default());
        // Replay what a resuming client missed, up to where the live entries begin.
        if let Some(after) = resume
            && after < live_from
        {
            let replay_call = Call::new(None, redis.command_timeout(), Namespace::default());
            if feed
                .fanout()
                .truncated_after(&redis, &replay_call, after)
                .await?
            {
                let gap = Gap {
                    reason: "truncated".into(),
                    dropped: 0,
                    cursor: after.to_string(),
                };
                if !sink.send(message(Event::Gap(gap))).await {
                    return Ok(());
                }
            }
            let mut from = after;
            'replay: loop {
                let (items, done) = feed
                    .fanout()
                    .entries_after(&redis, &replay_call, from, REPLAY_BATCH)
                    .await?;
                for item in items {
                    if item.cursor() > live_from {
                        break 'replay;
                    }
                    from = item.cursor();
                    if let Some(reply) = filter.message(&item) {
                        if !sink.send(reply).await {
                            return Ok(());
                        }
                        stats.events_delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if done {
                    break;
                }
            }
        }
        loop {
            match receiver.recv().await {
                Ok(item) => {
                    if item.cursor() <= delivered {
                        continue;
                    }
                    delivered = item.cursor();
                    if !send(&sink, &filter, &item, stats).await {
                        return Ok(());
                    }
                }
                Err(RecvError::Lagged(dropped)) => {
                    stats.events_dropped.fetch_add(dropped, Ordering::Relaxed);
                    let gap = Gap {
                        reason: "lagged".into(),
                        dropped,
                        cursor: delivered.to_string(),
                    };
                    if !sink.send(message(Event::Gap(gap))).await {
                        return Ok(());
                    }
                }
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }))
}

/// Sends `item` if the watcher wants it; false when the client has gone.
async fn send(
    sink: &Sink<pb::KeyValueWatchExpirationsResponse>,
    filter: &Filter,
    item: &Arc<FeedItem>,
    stats: &Stats,
) -> bool {
    match filter.message(item) {
        Some(reply) => {
            let sent = sink.send(reply).await;
            if sent {
                stats.events_delivered.fetch_add(1, Ordering::Relaxed);
            }
            sent
        }
        None => true,
    }
}

/// Counts an open WatchExpirations stream in the gateway's statistics while it lives.
struct Subscriber<'a> {
    stats: &'a Stats,
}

impl<'a> Subscriber<'a> {
    fn count(stats: &'a Stats) -> Self {
        stats.expiry_subscribers.fetch_add(1, Ordering::Relaxed);
        Self { stats }
    }
}

impl Drop for Subscriber<'_> {
    fn drop(&mut self) {
        self.stats
            .expiry_subscribers
            .fetch_sub(1, Ordering::Relaxed);
    }
}
