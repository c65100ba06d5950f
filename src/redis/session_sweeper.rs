//! The sweeper of session endings (see [`super::session_endings`] for the design): one
//! process at a time, elected with a lease, moves each due bucket's endings into the endings
//! stream (append, then remove: at least once) and keeps the due index exact; and the due
//! marks that session operations leave for it.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, Value};
use tokio_util::sync::CancellationToken;

use super::keys::SessionBucket;
use super::locks::random_id;
use super::scripts::{EXPIRY_WRITER, SESSION, SESSION_DUE, SESSION_ENDINGS_APPEND};
use super::session_endings::ENDINGS_KEY;
use super::{Call, Namespace, Redis, on_node, reply_array, reply_i64};
use crate::error::{Error, Idempotency};

/// The due index: bucket index keys by when they next need a sweep.
pub const DUE_KEY: &str = "__gw:session-due:{due}";
/// Per-bucket generations of the due index, raised by every mark (same slot as [`DUE_KEY`]).
const GENERATIONS_KEY: &str = "__gw:session-due-gen:{due}";
/// The sweeper's lease.
pub const SWEEPER_KEY: &str = "__gw:session-sweeper:{sweeper}";
/// The lease script's "live" flag, which the sweeper does not use (never set).
const SWEEPER_LIVE_KEY: &str = "__gw:session-sweeper:{sweeper}:live";
/// The sweeper's lease lasts this long without renewal.
const SWEEPER_LEASE: Duration = Duration::from_secs(3);
/// How often the sweeper sweeps, before jitter.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Up to this many milliseconds are added to each interval, so replicas do not contend in step.
pub const SWEEP_JITTER_MS: u64 = 250;
/// How often the sweeper looks for every bucket, in case a due mark was lost.
pub const FULL_PASS: Duration = Duration::from_secs(300);
/// Due buckets taken per query.
const DUE_BATCH: usize = 64;
/// Endings appended per bucket per sweep.
const BUCKET_BATCH: usize = 256;

/// A pending ending as the ended set holds it: `<reason>\n<user id>\n<session id>`.
fn split_pending(member: &str) -> Option<(&str, &str, &str)> {
    let (reason, rest) = member.split_once('\n')?;
    let (user, sid) = rest.rsplit_once('\n')?;
    Some((reason, user, sid))
}

fn internal_call(redis: &Redis) -> Call {
    Call::new(None, redis.command_timeout(), Namespace::default())
}

fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(0..=SWEEP_JITTER_MS))
}

/// The sweeper of one process (it sweeps only while it holds the lease).
pub struct Sweeper {
    /// About how many entries the endings stream keeps.
    pub retention: u64,
}

impl Sweeper {
    /// Sweeps while elected, until `shutdown`; gives the lease up at the end.
    pub async fn run(&self, redis: &Redis, shutdown: &CancellationToken) {
        let id = random_id();
        let mut elected = false;
        let mut last_full_pass = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_INTERVAL + jitter()) => {}
                () = shutdown.cancelled() => break,
            }
            // Only a process with work takes the lease, so an idle gateway writes nothing.
            let call = internal_call(redis);
            let now = match redis_now_ms(redis, &call).await {
                Ok(now) => now,
                Err(err) => {
                    tracing::debug!(error = %err, "the session sweeper cannot read Redis' clock");
                    continue;
                }
            };
            let full_pass = last_full_pass.elapsed() >= FULL_PASS;
            match any_due(redis, &call, now).await {
                Ok(true) => {}
                Ok(false) if full_pass => {}
                Ok(false) => continue,
                Err(err) => {
                    tracing::debug!(error = %err, "reading the session due index failed");
                    continue;
                }
            }
            let outcome = redis
                .eval(
                    &call,
                    Idempotency::AtMostOnce,
                    &EXPIRY_WRITER,
                    vec![SWEEPER_KEY.into(), SWEEPER_LIVE_KEY.into()],
                    vec![
                        id.as_str().into(),
                        (SWEEPER_LEASE.as_millis() as i64).to_string().into(),
                    ],
                )
                .await
                .and_then(reply_i64);
            match outcome {
                Ok(0) => {
                    elected = false;
                    continue;
                }
                Ok(kept) => {
                    if kept != 1 {
                        tracing::debug!("sweeping session endings");
                    }
                    elected = true;
                }
                Err(err) => {
                    tracing::debug!(error = %err, "the session sweeper election failed");
                    continue;
                }
            }
            if full_pass {
                match self.full_pass(redis).await {
                    Ok(()) => last_full_pass = tokio::time::Instant::now(),
                    Err(err) => tracing::debug!(error = %err, "the session full pass failed"),
                }
            }
            if let Err(err) = self.sweep_due(redis, now).await {
                tracing::debug!(error = %err, "sweeping session endings failed; retrying");
            }
        }
        if elected {
            release_lease(redis, &id).await;
        }
    }

    /// Sweeps every bucket due by Redis' clock.
    async fn sweep_due(&self, redis: &Redis, now: i64) -> Result<(), Error> {
        let call = internal_call(redis);
        loop {
            let due = redis
                .run(&call, Idempotency::Idempotent, |client| {
                    let now = now.to_string();
                    let limit = DUE_BATCH.to_string();
                    async move {
                        client
                            .custom::<Vec<String>, _>(
                                fred::cmd!("ZRANGEBYSCORE"),
                                vec![DUE_KEY, "-inf", &now, "LIMIT", "0", &limit],
                            )
                            .await
                    }
                })
                .await?;
            for member in &due {
                self.sweep_bucket(redis, &call, member).await?;
            }
            if due.len() < DUE_BATCH {
                return Ok(());
            }
        }
    }

    /// Moves one bucket's endings into the stream and settles its due score.
    async fn sweep_bucket(&self, redis: &Redis, call: &Call, member: &str) -> Result<(), Error> {
        let Some(bucket) = SessionBucket::parse(member) else {
            // Not a bucket (written by something else): drop it rather than meet it forever.
            let member = member.to_owned();
            return redis
                .run(call, Idempotency::Idempotent, |client| {
                    let member = member.clone();
                    async move {
                        client
                            .custom::<i64, _>(fred::cmd!("ZREM"), vec![DUE_KEY, member.as_str()])
                            .await
                    }
                })
                .await
                .map(drop);
        };
        let generation: Option<String> = redis
            .run(call, Idempotency::Idempotent, |client| {
                let member = member.to_owned();
                async move { client.hget(GENERATIONS_KEY, member).await }
            })
            .await?;
        let keys = || vec![bucket.index(), bucket.ended()];
        let collected = redis
            .eval(
                call,
                Idempotency::AtMostOnce,
                &SESSION,
                keys(),
                vec![
                    "collect".into(),
                    bucket.session_key_prefix().into(),
                    BUCKET_BATCH.to_string().into(),
                ],
            )
            .await?;
        let mut pending = Vec::new();
        let mut append: Vec<Value> = vec![self.retention.to_string().into()];
        let mut items = reply_array(collected)?.into_iter();
        while let (Some(entry), Some(ended)) = (items.next(), items.next()) {
            let Some(entry) = entry.into_string() else {
                continue;
            };
            if let Some((reason, user, sid)) = split_pending(&entry) {
                append.push(reason.into());
                append.push(user.into());
                append.push(sid.into());
                append.push(member_namespace(&bucket).into());
                let ended = ended.as_i64().unwrap_or_default();
                append.push(ended.to_string().into());
            }
            pending.push(Value::from(entry));
        }
        if append.len() > 1 {
            redis
                .eval(
                    call,
                    Idempotency::AtMostOnce,
                    &SESSION_ENDINGS_APPEND,
                    vec![ENDINGS_KEY.into()],
                    append,
                )
                .await?;
        }
        let mut settle = vec![Value::from("settle")];
        settle.extend(pending);
        let next = redis
            .eval(call, Idempotency::AtMostOnce, &SESSION, keys(), settle)
            .await?;
        let next = if next.is_null() {
            String::new()
        } else {
            reply_i64(next)?.to_string()
        };
        redis
            .eval(
                call,
                Idempotency::AtMostOnce,
                &SESSION_DUE,
                vec![DUE_KEY.into(), GENERATIONS_KEY.into()],
                vec![
                    "settle".into(),
                    member.into(),
                    generation.unwrap_or_else(|| "0".into()).into(),
                    next.into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Marks every bucket that has sessions or pending endings, in case a mark was lost.
    async fn full_pass(&self, redis: &Redis) -> Result<(), Error> {
        let call = internal_call(redis);
        for key in scan(redis, &call, "*__gw:sessions:{*").await? {
            let first: Vec<String> = redis
                .run(&call, Idempotency::Idempotent, |client| {
                    let key = key.clone();
                    async move {
                        client
                            .custom(
                                fred::cmd!("ZRANGE"),
                                vec![key.as_str(), "0", "0", "WITHSCORES"],
                            )
                            .await
                    }
                })
                .await?;
            if let Some(deadline) = first.get(1).and_then(|score| score.parse::<f64>().ok()) {
                mark(redis, &call, &key, deadline as i64).await;
            }
        }
        for key in scan(redis, &call, "*__gw:session-ended:{*").await? {
            mark(
                redis,
                &call,
                &key.replacen("__gw:session-ended:{", "__gw:sessions:{", 1),
                0,
            )
            .await;
        }
        Ok(())
    }
}

/// The namespace prefix of a bucket, as the stream records it.
fn member_namespace(bucket: &SessionBucket) -> String {
    bucket.namespace.prefix().to_owned()
}

/// Every key matching `pattern` (SCAN, on every primary of a cluster).
async fn scan(redis: &Redis, call: &Call, pattern: &str) -> Result<Vec<String>, Error> {
    let mut found = Vec::new();
    for node in redis.nodes()? {
        let node = node.as_ref();
        let mut cursor = "0".to_owned();
        loop {
            let reply: Value = redis
                .run(call, Idempotency::Idempotent, |client| {
                    let cursor = cursor.clone();
                    let client = on_node(client, node);
                    async move {
                        client
                            .custom(
                                fred::cmd!("SCAN", hash: ClusterHash::Random),
                                vec![cursor.as_str(), "MATCH", pattern, "COUNT", "1000"],
                            )
                            .await
                    }
                })
                .await?;
            let mut parts = reply_array(reply)?.into_iter();
            let (Some(next), Some(keys)) = (parts.next(), parts.next()) else {
                return Err(Error::Internal("SCAN replied without a cursor".into()));
            };
            found.extend(
                reply_array(keys)?
                    .into_iter()
                    .filter_map(Value::into_string),
            );
            cursor = next.into_string().unwrap_or_default();
            if cursor == "0" || cursor.is_empty() {
                break;
            }
        }
    }
    Ok(found)
}

/// Whether some bucket is due at `now`.
async fn any_due(redis: &Redis, call: &Call, now: i64) -> Result<bool, Error> {
    let first: Vec<String> = redis
        .run(call, Idempotency::Idempotent, |client| {
            let now = now.to_string();
            async move {
                client
                    .custom(
                        fred::cmd!("ZRANGEBYSCORE"),
                        vec![DUE_KEY, "-inf", &now, "LIMIT", "0", "1"],
                    )
                    .await
            }
        })
        .await?;
    Ok(!first.is_empty())
}

/// Redis' clock, ms since the epoch (session deadlines are by it).
async fn redis_now_ms(redis: &Redis, call: &Call) -> Result<i64, Error> {
    let time: Vec<i64> = redis
        .run(call, Idempotency::Idempotent, |client| async move {
            client
                .custom(fred::cmd!("TIME"), Vec::<String>::new())
                .await
        })
        .await?;
    match time.as_slice() {
        [seconds, micros] => Ok(seconds * 1000 + micros / 1000),
        _ => Err(Error::Internal("TIME replied oddly".into())),
    }
}

/// Marks bucket `member` due from `score` (never later than it already is). A lost mark is
/// found again by the full pass, so failures are only logged.
async fn mark(redis: &Redis, call: &Call, member: &str, score: i64) {
    let marked = redis
        .eval(
            call,
            Idempotency::AtMostOnce,
            &SESSION_DUE,
            vec![DUE_KEY.into(), GENERATIONS_KEY.into()],
            vec!["mark".into(), member.into(), score.to_string().into()],
        )
        .await;
    if let Err(err) = marked {
        tracing::debug!(error = %err, member, "marking a session bucket due failed; the full pass finds it");
    }
}

/// Gives up the sweeper lease so another process takes over at once.
async fn release_lease(redis: &Redis, id: &str) {
    let call = internal_call(redis);
    let released = redis
        .run(&call, Idempotency::Idempotent, |client| async move {
            let current: Option<String> = client.get(SWEEPER_KEY).await?;
            if current.as_deref() == Some(id) {
                client.del::<i64, _>(SWEEPER_KEY).await?;
            }
            Ok(())
        })
        .await;
    if let Err(err) = released {
        tracing::debug!(error = %err, "giving up the sweeper lease failed; it runs out");
    }
}

impl Redis {
    /// Marks the caller's bucket `tag` due from `score` (ms; 0 = now), after a session
    /// operation that gave it a deadline or recorded an ending.
    pub async fn session_due_mark(&self, call: &Call, tag: &str, score: i64) {
        let bucket = SessionBucket {
            namespace: call.namespace.clone(),
            tag: tag.to_owned(),
        };
        mark(self, call, &bucket.member(), score).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_endings_split_into_reason_user_and_session() {
        assert_eq!(
            split_pending("revoked\nuser-7\nabcd123"),
            Some(("revoked", "user-7", "abcd123"))
        );
        assert_eq!(split_pending("expired\nabcd"), None);
    }
}
