//! Session.WatchEnded: one watcher's view of the session-endings feed
//! ([`crate::redis::session_endings`]): validation, `subscribed`, the replay of what a resuming
//! client missed, then live endings of the caller's namespace, with `gap` messages where
//! endings may be missing.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::{Context, ResponseStream, timestamp};
use crate::error::Error;
use crate::pb;
use crate::pb::session_watch_ended_response::{Ended, Event, Gap, Subscribed};
use crate::redis::fanout::{Cursor, StreamEntry};
use crate::redis::session_endings::{EndReason, Ending};
use crate::redis::{Call, Namespace};

/// How long a new watcher waits for the reader to be in place before UNAVAILABLE.
const LIVE_WITHIN: Duration = Duration::from_secs(10);
/// Entries replayed per XRANGE.
const REPLAY_BATCH: usize = 512;

fn message(event: Event) -> pb::SessionWatchEndedResponse {
    pb::SessionWatchEndedResponse { event: Some(event) }
}

/// The message for `ending`, if it belongs to the caller's namespace.
fn ended(namespace: &Namespace, ending: &Ending) -> Option<pb::SessionWatchEndedResponse> {
    if ending.namespace != namespace.prefix() {
        return None;
    }
    let reason = match ending.reason {
        EndReason::Expired => pb::SessionEndReason::Expired,
        EndReason::Deleted => pb::SessionEndReason::Deleted,
        EndReason::Rotated => pb::SessionEndReason::Rotated,
        EndReason::Revoked => pb::SessionEndReason::Revoked,
    };
    Some(message(Event::Ended(Ended {
        session_id: ending.session_id.clone(),
        user_id: ending.user_id.clone(),
        reason: reason.into(),
        ended_at: Some(timestamp(ending.ended_ms)),
        cursor: ending.cursor.to_string(),
    })))
}

fn gap(reason: &str, dropped: u64, cursor: Cursor) -> pb::SessionWatchEndedResponse {
    message(Event::Gap(Gap {
        reason: reason.into(),
        dropped,
        cursor: cursor.to_string(),
    }))
}

/// Serves one WatchEnded call.
pub async fn watch_ended(
    context: &Context,
    call: Call,
    request: pb::SessionWatchEndedRequest,
) -> Result<ResponseStream<pb::SessionWatchEndedResponse>, Error> {
    let resume = match request.resume_after.as_str() {
        "" => None,
        cursor => Some(cursor.parse::<Cursor>().map_err(|()| {
            Error::invalid(
                "resume_after",
                "is not a cursor: pass one from an earlier message, as the stream sent it",
            )
        })?),
    };
    let slot = context.shared.watchers.admit(&call.namespace)?;
    let feed = context.shared.session_endings.clone();
    let watch = feed.watch();
    feed.fanout()
        .wait_ready(LIVE_WITHIN, "session endings")
        .await?;
    let (mut receiver, live_from) = watch.subscribe();
    let redis = context.redis.clone();
    let namespace = call.namespace.clone();
    Ok(context.stream(move |sink| async move {
        // Registered for as long as the stream runs.
        let _watch = watch;
        let _slot = slot;
        let subscribed = Subscribed {
            cursor: live_from.to_string(),
        };
        if !sink.send(message(Event::Subscribed(subscribed))).await {
            return Ok(());
        }
        // Replay what a resuming client missed, up to where the live entries begin.
        if let Some(after) = resume
            && after < live_from
        {
            let replay_call = Call::new(None, redis.command_timeout(), Namespace::default());
            let fanout = feed.fanout();
            if fanout.truncated_after(&redis, &replay_call, after).await?
                && !sink.send(gap("truncated", 0, after)).await
            {
                return Ok(());
            }
            let mut from = after;
            'replay: loop {
                let (endings, done) = fanout
                    .entries_after(&redis, &replay_call, from, REPLAY_BATCH)
                    .await?;
                for ending in endings {
                    if ending.cursor() > live_from {
                        break 'replay;
                    }
                    from = ending.cursor();
                    if let Some(reply) = ended(&namespace, &ending)
                        && !sink.send(reply).await
                    {
                        return Ok(());
                    }
                }
                if done {
                    break;
                }
            }
        }
        // What the client already has is never sent again, also when this process's reader
        // is behind the client's resume point.
        let mut delivered = live_from.max(resume.unwrap_or_default());
        loop {
            match receiver.recv().await {
                Ok(ending) => {
                    if ending.cursor() <= delivered {
                        continue;
                    }
                    delivered = ending.cursor();
                    if let Some(reply) = ended(&namespace, &ending)
                        && !sink.send(reply).await
                    {
                        return Ok(());
                    }
                }
                Err(RecvError::Lagged(dropped)) => {
                    if !sink.send(gap("lagged", dropped, delivered)).await {
                        return Ok(());
                    }
                }
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }))
}
