//! Typed operations on Redis strings and keys, as the KeyValue service uses them.
//!
//! Each takes the [`Call`] and plain Rust values (caller keys as `String`s, values as
//! [`Bytes`]), applies the caller's namespace, runs one command or script through
//! [`Redis::run`] / [`Redis::eval`], and returns plain values. Nothing here knows gRPC.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Expiration, ExpireOptions, SetOptions, Value};

use super::near_cache::Holding;
use super::scripts::{KV_COMPARE_AND_SWAP, KV_GET, KV_INCREMENT, KV_SET_MANY};
use super::slots::by_slot;
use super::{Call, Redis, reply_array, reply_bytes, reply_i64};
use crate::error::{Error, Idempotency};

/// What these operations expect a key to hold, for WRONGTYPE messages.
const STRING: &str = "string";

/// A key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlState {
    /// The key does not exist.
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key expires after this long.
    Expiring(Duration),
}

impl TtlState {
    /// Reads a PTTL reply: -2 missing, -1 no TTL, else milliseconds.
    fn from_pttl(pttl: i64) -> Self {
        match pttl {
            -2 => Self::Missing,
            -1 => Self::Persistent,
            millis => Self::Expiring(Duration::from_millis(millis.max(0) as u64)),
        }
    }
}

/// When a SET applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    /// Always.
    Always,
    /// Only when the key does not exist (NX).
    IfAbsent,
    /// Only when the key exists (XX).
    IfPresent,
}

/// What a write does to the key's TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlChange {
    /// Remove any TTL (a plain SET).
    Clear,
    /// Keep the key's current TTL.
    Keep,
    /// Expire after this many milliseconds.
    Millis(u64),
}

/// A conditional PEXPIRE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireCondition {
    /// Always.
    Always,
    /// Only when the key has no TTL (NX).
    IfNoTtl,
    /// Only when the key has a TTL (XX).
    IfHasTtl,
    /// Only when the new TTL is greater (GT).
    IfGreater,
    /// Only when the new TTL is less (LT).
    IfLess,
}

/// The result of a SET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOutcome {
    /// Whether the value was written.
    pub applied: bool,
    /// The value before the SET, when it was asked for (`None` inside: the key was absent).
    pub previous: Option<Option<Bytes>>,
}

/// What a compare-and-swap expects the key to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Exactly these bytes.
    Equals(Bytes),
    /// Nothing: the key is absent.
    Absent,
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapOutcome {
    /// Whether the new value was written.
    pub swapped: bool,
    /// The key's value when the expectation failed (`None`: absent).
    pub current: Option<Bytes>,
}

/// A milliseconds TTL as the Lua scripts take it: digits, or empty for none.
fn ttl_arg(ttl: Option<u64>) -> Value {
    Value::from(ttl.map(|ms| ms.to_string()).unwrap_or_default())
}

fn flag(on: bool) -> Value {
    Value::from(if on { "1" } else { "0" })
}

impl Redis {
    /// Drops written keys from the near cache (see [`super::near_cache`]), whatever the write's
    /// outcome: a client then reads its own writes through this gateway.
    pub(crate) fn forget_all(&self, keys: &[Key]) {
        for key in keys {
            self.near_cache.forget(key.as_bytes());
        }
    }

    /// GET.
    pub async fn get(&self, call: &Call, key: String) -> Result<Option<Bytes>, Error> {
        self.get_key(call, call.namespace.key(key)).await
    }

    /// GET of a Redis key (the namespace applied).
    async fn get_key(&self, call: &Call, key: Key) -> Result<Option<Bytes>, Error> {
        let reply = self
            .run(call, Idempotency::Idempotent, |client| {
                let key = key.clone();
                async move { client.get::<Value, _>(key).await }
            })
            .await;
        reply_bytes(self.name_wrong_type(call, &key, STRING, reply).await?)
    }

    /// GET that may also refresh the TTL (`refresh_ms`) and read it (`include_ttl`), in one
    /// atomic step.
    pub async fn get_with_ttl(
        &self,
        call: &Call,
        key: String,
        refresh_ms: Option<u64>,
        include_ttl: bool,
    ) -> Result<(Option<Bytes>, Option<TtlState>), Error> {
        self.get_with_ttl_key(call, call.namespace.key(key), refresh_ms, include_ttl)
            .await
    }

    /// [`Redis::get_with_ttl`] of a Redis key (the namespace applied).
    async fn get_with_ttl_key(
        &self,
        call: &Call,
        key: Key,
        refresh_ms: Option<u64>,
        include_ttl: bool,
    ) -> Result<(Option<Bytes>, Option<TtlState>), Error> {
        let idempotency = if refresh_ms.is_some() {
            Idempotency::AtMostOnce
        } else {
            Idempotency::Idempotent
        };
        let reply = self
            .eval(
                call,
                idempotency,
                &KV_GET,
                vec![key.clone()],
                vec![ttl_arg(refresh_ms), flag(include_ttl)],
            )
            .await;
        if refresh_ms.is_some() {
            self.near_cache.forget(key.as_bytes());
        }
        let reply = self.name_wrong_type(call, &key, STRING, reply).await?;
        let mut parts = reply_array(reply)?.into_iter();
        let value = reply_bytes(parts.next().unwrap_or(Value::Null))?;
        let ttl = if include_ttl {
            let pttl = reply_i64(parts.next().unwrap_or(Value::Integer(-2)))?;
            Some(TtlState::from_pttl(pttl))
        } else {
            None
        };
        Ok((value, ttl))
    }

    /// GET through the near cache (see [`super::near_cache`]): from memory when an entry may
    /// be served, else read on the tracking connection and kept; uncached, from the pool, when
    /// the cache cannot take the read. With `include_ttl`, the key's TTL too. The flag says
    /// whether the answer came from memory.
    pub async fn get_near(
        &self,
        call: &Call,
        key: String,
        include_ttl: bool,
    ) -> Result<(Option<Bytes>, Option<TtlState>, bool), Error> {
        let key = call.namespace.key(key);
        let (entry, hit) = match self.near_cache.lookup(key.inner()) {
            Some(entry) => (Some(entry), true),
            None => {
                let filled = self
                    .near_cache
                    .fill(call, std::slice::from_ref(key.inner()))
                    .await;
                (filled.and_then(|read| read.into_iter().next()), false)
            }
        };
        let Some(entry) = entry else {
            return if include_ttl {
                let (value, ttl) = self.get_with_ttl_key(call, key, None, true).await?;
                Ok((value, ttl, false))
            } else {
                Ok((self.get_key(call, key).await?, None, false))
            };
        };
        if let Holding::OtherType(actual) = &entry.holding {
            return Err(Error::WrongType {
                expected: Some(STRING),
                actual: Some(actual.to_string()),
            });
        }
        let ttl = include_ttl.then(|| entry.ttl(Instant::now()));
        Ok((entry.value(), ttl, hit))
    }

    /// MGET through the near cache: what may be served from memory, the rest read on the
    /// tracking connection (one script) and kept; uncached, from the pool, when the cache
    /// cannot take the read. Also returns how many values came from memory.
    pub async fn get_many_near(
        &self,
        call: &Call,
        keys: Vec<String>,
    ) -> Result<(Vec<Option<Bytes>>, usize), Error> {
        let keys = call.namespace.keys(keys);
        let mut values: Vec<Option<Option<Bytes>>> = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for key in &keys {
            match self.near_cache.lookup(key.inner()) {
                Some(entry) => values.push(Some(entry.value())),
                None => {
                    values.push(None);
                    missing.push(key.inner().clone());
                }
            }
        }
        let hits = keys.len() - missing.len();
        if missing.is_empty() {
            return Ok((values.into_iter().flatten().collect(), hits));
        }
        let Some(read) = self.near_cache.fill(call, &missing).await else {
            return Ok((self.get_many_keys(call, keys).await?, 0));
        };
        let mut read = read.into_iter();
        let values = values
            .into_iter()
            .map(|value| value.unwrap_or_else(|| read.next().and_then(|entry| entry.value())))
            .collect();
        Ok((values, hits))
    }

    /// SET with a condition, a TTL change, and optionally the previous value (SET … GET).
    pub async fn set(
        &self,
        call: &Call,
        key: String,
        value: Bytes,
        condition: SetCondition,
        ttl: TtlChange,
        return_previous: bool,
    ) -> Result<SetOutcome, Error> {
        let key = call.namespace.key(key);
        let expiration = match ttl {
            TtlChange::Clear => None,
            TtlChange::Keep => Some(Expiration::KEEPTTL),
            TtlChange::Millis(ms) => Some(Expiration::PX(ms as i64)),
        };
        let set_option = match condition {
            SetCondition::Always => None,
            SetCondition::IfAbsent => Some(SetOptions::NX),
            SetCondition::IfPresent => Some(SetOptions::XX),
        };
        let reply = self
            .run(call, Idempotency::AtMostOnce, |client| {
                let (key, value) = (key.clone(), Value::Bytes(value.clone()));
                let (expiration, set_option) = (expiration.clone(), set_option.clone());
                async move {
                    client
                        .set::<Value, _, _>(key, value, expiration, set_option, return_previous)
                        .await
                }
            })
            .await;
        self.near_cache.forget(key.as_bytes());
        let reply = self.name_wrong_type(call, &key, STRING, reply).await?;
        if !return_previous {
            return Ok(SetOutcome {
                applied: !reply.is_null(),
                previous: None,
            });
        }
        let previous = reply_bytes(reply)?;
        let applied = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => previous.is_none(),
            SetCondition::IfPresent => previous.is_some(),
        };
        Ok(SetOutcome {
            applied,
            previous: Some(previous),
        })
    }

    /// MGET.
    pub async fn get_many(
        &self,
        call: &Call,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Bytes>>, Error> {
        self.get_many_keys(call, call.namespace.keys(keys)).await
    }

    /// MGET of Redis keys (the namespace applied); on a cluster one MGET per slot, sent
    /// together.
    async fn get_many_keys(
        &self,
        call: &Call,
        keys: Vec<Key>,
    ) -> Result<Vec<Option<Bytes>>, Error> {
        if self.spans_slots(&keys) {
            let groups = by_slot(&keys);
            let replies = futures_util::future::join_all(
                groups
                    .iter()
                    .map(|(_, members)| Box::pin(self.mget(call, members.clone()))),
            )
            .await;
            let mut values = vec![None; keys.len()];
            for ((positions, _), reply) in groups.iter().zip(replies) {
                for (&position, value) in positions.iter().zip(reply?) {
                    values[position] = value;
                }
            }
            return Ok(values);
        }
        self.mget(call, keys).await
    }

    /// One MGET.
    async fn mget(&self, call: &Call, keys: Vec<Key>) -> Result<Vec<Option<Bytes>>, Error> {
        let reply = self
            .run(call, Idempotency::Idempotent, |client| {
                let keys = keys.clone();
                async move { client.mget::<Value, _>(keys).await }
            })
            .await?;
        reply_array(reply)?.into_iter().map(reply_bytes).collect()
    }

    /// Writes every entry or none: with `if_none_exist`, nothing when any key exists.
    /// Returns whether the entries were written.
    pub async fn set_many(
        &self,
        call: &Call,
        entries: Vec<(String, Bytes)>,
        ttl_ms: Option<u64>,
        if_none_exist: bool,
    ) -> Result<bool, Error> {
        let mut keys = Vec::with_capacity(entries.len());
        let mut args = Vec::with_capacity(entries.len() + 2);
        args.push(ttl_arg(ttl_ms));
        args.push(flag(if_none_exist));
        for (key, value) in entries {
            keys.push(call.namespace.key(key));
            args.push(Value::Bytes(value));
        }
        // All or none: one script, so one slot.
        self.one_slot("entries", &keys)?;
        let reply = self
            .eval(
                call,
                Idempotency::AtMostOnce,
                &KV_SET_MANY,
                keys.clone(),
                args,
            )
            .await;
        self.forget_all(&keys);
        Ok(reply_i64(reply?)? == 1)
    }

    /// UNLINK (DEL that frees large values in the background); the number removed.
    pub async fn delete(&self, call: &Call, keys: Vec<String>) -> Result<i64, Error> {
        let keys = call.namespace.keys(keys);
        let deleted = self
            .count_per_slot(call, &keys, Idempotency::AtMostOnce, "UNLINK")
            .await;
        self.forget_all(&keys);
        deleted
    }

    /// EXISTS: how many of `keys` exist (a key named twice counts twice).
    pub async fn exists(&self, call: &Call, keys: Vec<String>) -> Result<i64, Error> {
        let keys = call.namespace.keys(keys);
        self.count_per_slot(call, &keys, Idempotency::Idempotent, "EXISTS")
            .await
    }

    /// A command over `keys` that answers a count (UNLINK, EXISTS); on a cluster one per slot,
    /// sent together, their counts summed. The outcome of a write is unknown if any part's is.
    async fn count_per_slot(
        &self,
        call: &Call,
        keys: &[Key],
        idempotency: Idempotency,
        command: &'static str,
    ) -> Result<i64, Error> {
        let count = |keys: Vec<Key>| {
            self.run(call, idempotency, move |client| {
                let args: Vec<Value> = keys.iter().cloned().map(Value::from).collect();
                async move {
                    client
                        .custom::<i64, Value>(
                            CustomCommand::new_static(command, ClusterHash::FirstKey, false),
                            args,
                        )
                        .await
                }
            })
        };
        if !self.spans_slots(keys) {
            return Box::pin(count(keys.to_vec())).await;
        }
        let counts = futures_util::future::join_all(
            by_slot(keys)
                .into_iter()
                .map(|(_, members)| Box::pin(count(members))),
        )
        .await;
        let mut total = 0;
        let mut failure: Option<Error> = None;
        for result in counts {
            match result {
                Ok(count) => total += count,
                // An unknown outcome outranks a known failure: some part may have applied.
                Err(err) if failure.as_ref().is_none_or(|kept| !outcome_unknown(kept)) => {
                    failure = Some(err);
                }
                Err(_) => {}
            }
        }
        failure.map_or(Ok(total), Err)
    }

    /// PEXPIRE with a condition; whether the TTL was set.
    pub async fn expire(
        &self,
        call: &Call,
        key: String,
        ttl_ms: u64,
        condition: ExpireCondition,
    ) -> Result<bool, Error> {
        let key = call.namespace.key(key);
        let option = match condition {
            ExpireCondition::Always => None,
            ExpireCondition::IfNoTtl => Some(ExpireOptions::NX),
            ExpireCondition::IfHasTtl => Some(ExpireOptions::XX),
            ExpireCondition::IfGreater => Some(ExpireOptions::GT),
            ExpireCondition::IfLess => Some(ExpireOptions::LT),
        };
        let applied = self
            .run(call, Idempotency::AtMostOnce, |client| {
                let (key, option) = (key.clone(), option.clone());
                async move { client.pexpire::<i64, _>(key, ttl_ms as i64, option).await }
            })
            .await;
        // The cached entry carries the key's TTL.
        self.near_cache.forget(key.as_bytes());
        let applied = applied?;
        Ok(applied == 1)
    }

    /// PERSIST; whether a TTL was removed.
    pub async fn persist(&self, call: &Call, key: String) -> Result<bool, Error> {
        let key = call.namespace.key(key);
        let applied = self
            .run(call, Idempotency::AtMostOnce, |client| {
                let key = key.clone();
                async move { client.persist::<i64, _>(key).await }
            })
            .await;
        self.near_cache.forget(key.as_bytes());
        let applied = applied?;
        Ok(applied == 1)
    }

    /// PTTL.
    pub async fn ttl(&self, call: &Call, key: String) -> Result<TtlState, Error> {
        let key = call.namespace.key(key);
        let pttl = self
            .run(call, Idempotency::Idempotent, |client| {
                let key = key.clone();
                async move { client.pttl::<i64, _>(key).await }
            })
            .await?;
        Ok(TtlState::from_pttl(pttl))
    }

    /// INCRBY; with `ttl_ms`, a counter without a TTL gets one in the same step (fixed-window
    /// rate limits).
    pub async fn increment(
        &self,
        call: &Call,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, Error> {
        let key = call.namespace.key(key);
        let value = match ttl_ms {
            None => {
                self.run(call, Idempotency::AtMostOnce, |client| {
                    let key = key.clone();
                    async move { client.incr_by::<i64, _>(key, delta).await }
                })
                .await
            }
            Some(ms) => self
                .eval(
                    call,
                    Idempotency::AtMostOnce,
                    &KV_INCREMENT,
                    vec![key.clone()],
                    vec![Value::from(delta.to_string()), Value::from(ms.to_string())],
                )
                .await
                .and_then(reply_i64),
        };
        self.near_cache.forget(key.as_bytes());
        self.name_wrong_type(call, &key, STRING, value).await
    }

    /// INCRBYFLOAT.
    pub async fn increment_float(
        &self,
        call: &Call,
        key: String,
        delta: f64,
    ) -> Result<f64, Error> {
        let key = call.namespace.key(key);
        let value = self
            .run(call, Idempotency::AtMostOnce, |client| {
                let key = key.clone();
                async move { client.incr_by_float::<f64, _>(key, delta).await }
            })
            .await;
        self.near_cache.forget(key.as_bytes());
        self.name_wrong_type(call, &key, STRING, value).await
    }

    /// Writes `value` only when the key holds what `expected` says, atomically.
    pub async fn compare_and_swap(
        &self,
        call: &Call,
        key: String,
        expected: Expectation,
        value: Bytes,
        ttl: TtlChange,
    ) -> Result<SwapOutcome, Error> {
        let (mode, expected) = match expected {
            Expectation::Equals(bytes) => ("equals", Value::Bytes(bytes)),
            Expectation::Absent => ("absent", Value::from("")),
        };
        let (ttl_ms, keep_ttl) = match ttl {
            TtlChange::Clear => (None, false),
            TtlChange::Keep => (None, true),
            TtlChange::Millis(ms) => (Some(ms), false),
        };
        let key = call.namespace.key(key);
        let reply = self
            .eval(
                call,
                Idempotency::AtMostOnce,
                &KV_COMPARE_AND_SWAP,
                vec![key.clone()],
                vec![
                    Value::from(mode),
                    expected,
                    Value::Bytes(value),
                    ttl_arg(ttl_ms),
                    flag(keep_ttl),
                ],
            )
            .await;
        self.near_cache.forget(key.as_bytes());
        let reply = self.name_wrong_type(call, &key, STRING, reply).await?;
        let mut parts = reply_array(reply)?.into_iter();
        let swapped = parts.next().map(reply_i64).transpose()? == Some(1);
        let current = if swapped {
            None
        } else {
            reply_bytes(parts.next().unwrap_or(Value::Null))?
        };
        Ok(SwapOutcome { swapped, current })
    }
}

/// Whether `err` leaves a write's outcome unknown.
fn outcome_unknown(err: &Error) -> bool {
    matches!(
        err,
        Error::Unavailable {
            outcome_unknown: true,
            ..
        } | Error::DeadlineExceeded {
            outcome_unknown: true
        }
    )
}
