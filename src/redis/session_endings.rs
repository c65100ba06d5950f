//! The session-endings feed behind Session.WatchEnded, built without keyspace notifications
//! (lost on Cluster unless every node is subscribed, blocked with CONFIG on managed Redis,
//! reset by a Redis restart): the gateway finds endings itself.
//!
//! - **Recording.** `lua/session.lua` records Delete, Rotate and DeleteByUser in a per-bucket
//!   "ended" sorted set, atomically with the change. An expiry needs no record: the bucket's
//!   index holds every session's deadline, and a member whose deadline passed is a session
//!   that expired (the script turns it into an `expired` ending when it meets it).
//! - **Due index.** A sorted set ([`DUE_KEY`](super::session_sweeper::DUE_KEY)) of buckets
//!   scored by a lower bound of when each next needs a sweep. Create and Rotate mark their
//!   bucket with the new deadline, explicit endings with 0 (now), after their session script
//!   (`lua/session_due.lua`, `ZADD LT`: a mark only ever makes a bucket due earlier). Sliding
//!   touches only move deadlines later and need no mark. The mark is a separate command (the
//!   index lives in another slot): if it is lost (the gateway dies in between), the sweeper's
//!   full pass (every [`FULL_PASS`](super::session_sweeper::FULL_PASS): SCAN for every bucket
//!   index and ended set, marking each; on a Cluster it reaches one node) finds the bucket.
//! - **Sweeper** ([`super::session_sweeper`]). One process at a time (a lease, renewed each
//!   round) sweeps, whether anyone watches or not: it also keeps the indexes free of expired
//!   members and the ended sets from growing. Every second plus up to a quarter second of
//!   jitter, each process checks whether some bucket is due by Redis' clock; only then (or
//!   when its full pass is due) does it take or renew the lease, so an idle gateway writes
//!   nothing. The lease holder takes the due buckets and for each: reads the bucket's
//!   generation in the due index, runs `collect` (expired members become endings; returns the
//!   pending endings), appends them to the capped stream [`ENDINGS_KEY`], then runs `settle`
//!   (removes exactly those endings, returns the bucket's next deadline) and settles the due
//!   score: set exactly when no mark came in since the generation was read, otherwise only
//!   lowered (comparing scores would not do: a bucket being swept is due, its score in the
//!   past, and a new session's later deadline cannot lower it).
//! - **Delivery.** Append before remove: every ending reaches the stream at least once; a
//!   sweeper that dies between the two steps leaves the endings pending, and the next sweep
//!   appends them again (a duplicate with the same session id and reason). An expiry is in
//!   the stream within about 1.25 s (the sweep interval and its jitter) of its deadline (plus
//!   the sweep's own time, and a lease's worth when the sweeper changes).
//! - **Reading.** Every process with watchers follows the stream through
//!   [`super::fanout::StreamFanout`]; entry ids are the cursors clients resume after.

use std::sync::Arc;
use std::time::Duration;

use fred::types::Value;
use fred::types::config::Config as FredConfig;
use tokio_util::sync::CancellationToken;

use super::Redis;
use super::fanout::{Cursor, FanoutWatch, StreamEntry, StreamFanout};
use super::reply_array;
use super::session_sweeper::Sweeper;
use crate::error::Error;

/// The capped stream of session endings.
pub const ENDINGS_KEY: &str = "__gw:session:endings";

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its deadline passed.
    Expired,
    /// Session.Delete.
    Deleted,
    /// Session.Rotate (the old id).
    Rotated,
    /// Session.DeleteByUser.
    Revoked,
}

impl EndReason {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "expired" => Some(Self::Expired),
            "deleted" => Some(Self::Deleted),
            "rotated" => Some(Self::Rotated),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// One entry of the endings stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Its position.
    pub cursor: Cursor,
    /// Why.
    pub reason: EndReason,
    /// The session's user.
    pub user_id: String,
    /// The id that ended.
    pub session_id: String,
    /// The namespace prefix the session lived in.
    pub namespace: String,
    /// When it ended, ms since the epoch (Redis' clock).
    pub ended_ms: i64,
}

impl StreamEntry for Ending {
    fn cursor(&self) -> Cursor {
        self.cursor
    }
}

/// Reads XRANGE-style entries of the endings stream.
pub fn parse_endings(reply: Value) -> Result<Vec<Ending>, Error> {
    let mut endings = Vec::new();
    for entry in reply_array(reply)? {
        let mut parts = reply_array(entry)?.into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(cursor) = id.as_str().and_then(|id| id.parse().ok()) else {
            continue;
        };
        let (mut reason, mut user, mut sid, mut namespace, mut ended) =
            (None, None, None, String::new(), 0);
        let mut fields = reply_array(fields)?.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            match name.as_str().as_deref() {
                Some("reason") => reason = value.as_string().as_deref().and_then(EndReason::parse),
                Some("user") => user = value.as_string(),
                Some("sid") => sid = value.as_string(),
                Some("ns") => namespace = value.as_string().unwrap_or_default(),
                Some("t") => ended = value.as_i64().unwrap_or_default(),
                _ => {}
            }
        }
        if let (Some(reason), Some(user_id), Some(session_id)) = (reason, user, sid) {
            endings.push(Ending {
                cursor,
                reason,
                user_id,
                session_id,
                namespace,
                ended_ms: ended,
            });
        }
    }
    Ok(endings)
}

/// The process's session-endings feed: the sweeper (when elected) and the reader.
#[derive(Debug)]
pub struct SessionEndings {
    /// About how many endings the stream keeps.
    retention: u64,
    /// The reader of the stream and the local watchers.
    fanout: Arc<StreamFanout<Ending>>,
}

impl SessionEndings {
    /// A feed whose stream keeps about `retention` endings; [`SessionEndings::run`] starts it.
    pub fn new(retention: u64) -> Self {
        Self {
            retention,
            fanout: Arc::new(StreamFanout::new(ENDINGS_KEY, parse_endings)),
        }
    }

    /// The stream and its reader.
    pub fn fanout(&self) -> &StreamFanout<Ending> {
        &self.fanout
    }

    /// Registers a watcher (which starts the reader).
    pub fn watch(&self) -> FanoutWatch<Ending> {
        self.fanout.watch()
    }

    /// Runs the reader and the sweeper election (and, while elected, the sweeps) until
    /// `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        redis: Redis,
        fred: FredConfig,
        timeout: Duration,
        shutdown: CancellationToken,
    ) {
        let reader = tokio::spawn(self.fanout.clone().read(fred, timeout, shutdown.clone()));
        let sweeper = Sweeper {
            retention: self.retention,
        };
        sweeper.run(&redis, &shutdown).await;
        let _ = reader.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_entries_parse_into_endings() {
        let entry = Value::Array(vec![
            Value::from("1700000000000-3"),
            Value::Array(
                [
                    "reason", "rotated", "user", "u", "sid", "s", "ns", "", "t", "1700",
                ]
                .into_iter()
                .map(Value::from)
                .collect(),
            ),
        ]);
        let parsed = parse_endings(Value::Array(vec![entry])).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].reason, EndReason::Rotated);
        assert_eq!(parsed[0].cursor.to_string(), "1700000000000-3");
        assert_eq!(parsed[0].ended_ms, 1700);
    }
}
