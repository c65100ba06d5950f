//! The KeyValue service: Redis strings, counters, scans and transactions.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{Expiration, ExpireOptions, SetOptions, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::call_context;
use crate::error::{Error, Idempotency};
use crate::limits::{Limits, glob_pattern};
use crate::pb::compare_and_swap_request::Expectation;
use crate::pb::key_value_server::KeyValue;
use crate::pb::{self, ttl_status};
use crate::redis::scan::KeyScan;
use crate::redis::scripts::{
    KV_COMPARE_AND_SWAP, KV_GET, KV_INCREMENT, KV_SET_MANY, KV_TRANSACTION,
};
use crate::redis::{Call, Redis, reply_array, reply_bytes, reply_i64, transaction};

/// Keys per Scan page when the request leaves `page_size` at 0.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// Redis types a Scan may filter on.
const SCAN_TYPES: &[&str] = &["string", "hash", "list", "set", "zset", "stream"];

/// Serves `redisgateway.v1.KeyValue`.
#[derive(Clone)]
pub struct KeyValueService {
    /// The Redis pool.
    redis: Redis,
    /// Request bounds.
    limits: Limits,
    /// Cancelled when the server drains, so Scan streams end themselves.
    shutdown: CancellationToken,
}

impl KeyValueService {
    /// A service over `redis` that ends its streams when `shutdown` is cancelled.
    pub fn new(redis: Redis, limits: Limits, shutdown: CancellationToken) -> Self {
        Self {
            redis,
            limits,
            shutdown,
        }
    }

    fn call<T>(&self, request: &Request<T>) -> Call {
        call_context(request.metadata(), self.redis.command_timeout())
    }
}

/// Converts a PTTL reply (-2 missing, -1 no TTL, else milliseconds) to a TtlStatus.
fn ttl_status(pttl: i64) -> pb::TtlStatus {
    match pttl {
        -2 => pb::TtlStatus {
            state: ttl_status::State::Missing.into(),
            ttl: None,
        },
        -1 => pb::TtlStatus {
            state: ttl_status::State::Persistent.into(),
            ttl: None,
        },
        millis => pb::TtlStatus {
            state: ttl_status::State::Expiring.into(),
            ttl: Some(prost_types::Duration {
                seconds: millis / 1000,
                nanos: ((millis % 1000) * 1_000_000) as i32,
            }),
        },
    }
}

/// A milliseconds TTL as the Lua scripts take it: digits, or empty for none.
fn ttl_arg(ttl: Option<u64>) -> Value {
    Value::from(ttl.map(|ms| ms.to_string()).unwrap_or_default())
}

/// The Redis keys for a caller's keys.
fn redis_keys(call: &Call, keys: &[String]) -> Vec<Key> {
    keys.iter().map(|key| call.namespace.key(key)).collect()
}

/// Rejects an enum number the client's stubs know but this server does not.
fn unknown_enum(field: &str, number: i32) -> Error {
    Error::invalid(field, format!("has unknown value {number}"))
}

#[tonic::async_trait]
impl KeyValue for KeyValueService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.key("key", &request.key)?;
        let refresh = self
            .limits
            .ttl("refresh_ttl", request.refresh_ttl.as_ref())?;
        let key = call.namespace.key(&request.key);

        if refresh.is_none() && !request.include_ttl {
            let reply = self
                .redis
                .run(&call, Idempotency::Idempotent, |client| {
                    let key = key.clone();
                    async move { client.get::<Value, _>(key).await }
                })
                .await?;
            let value = reply_bytes(reply)?;
            return Ok(Response::new(pb::GetResponse {
                found: value.is_some(),
                value: value.unwrap_or_default(),
                ttl: None,
            }));
        }

        let idempotency = if refresh.is_some() {
            Idempotency::AtMostOnce
        } else {
            Idempotency::Idempotent
        };
        let include_ttl = if request.include_ttl { "1" } else { "0" };
        let reply = self
            .redis
            .eval(
                &call,
                idempotency,
                &KV_GET,
                vec![key],
                vec![ttl_arg(refresh), Value::from(include_ttl)],
            )
            .await?;
        let mut parts = reply_array(reply)?.into_iter();
        let value = reply_bytes(parts.next().unwrap_or(Value::Null))?;
        let ttl = if request.include_ttl {
            Some(ttl_status(reply_i64(
                parts.next().unwrap_or(Value::Integer(-2)),
            )?))
        } else {
            None
        };
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            ttl,
        }))
    }

    async fn set(
        &self,
        request: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.key("key", &request.key)?;
        self.limits.value("value", &request.value)?;
        let ttl = self.limits.ttl("ttl", request.ttl.as_ref())?;
        if ttl.is_some() && request.keep_ttl {
            return Err(Error::invalid("keep_ttl", "cannot be combined with ttl").into());
        }
        let condition = pb::set_request::Condition::try_from(request.condition)
            .map_err(|_| unknown_enum("condition", request.condition))?;
        let expiration = match (ttl, request.keep_ttl) {
            (Some(ms), _) => Some(Expiration::PX(ms as i64)),
            (None, true) => Some(Expiration::KEEPTTL),
            (None, false) => None,
        };
        let set_option = match condition {
            pb::set_request::Condition::Always => None,
            pb::set_request::Condition::IfAbsent => Some(SetOptions::NX),
            pb::set_request::Condition::IfPresent => Some(SetOptions::XX),
        };
        let key = call.namespace.key(&request.key);
        let return_previous = request.return_previous;
        let reply = self
            .redis
            .run(&call, Idempotency::AtMostOnce, |client| {
                let (key, value) = (key.clone(), Value::Bytes(request.value.clone()));
                let (expiration, set_option) = (expiration.clone(), set_option.clone());
                async move {
                    client
                        .set::<Value, _, _>(key, value, expiration, set_option, return_previous)
                        .await
                }
            })
            .await?;
        let response = if return_previous {
            let previous = reply_bytes(reply)?;
            let applied = match condition {
                pb::set_request::Condition::Always => true,
                pb::set_request::Condition::IfAbsent => previous.is_none(),
                pb::set_request::Condition::IfPresent => previous.is_some(),
            };
            pb::SetResponse {
                applied,
                previous_found: previous.is_some(),
                previous: previous.unwrap_or_default(),
            }
        } else {
            pb::SetResponse {
                applied: !reply.is_null(),
                previous_found: false,
                previous: Bytes::new(),
            }
        };
        Ok(Response::new(response))
    }

    async fn get_many(
        &self,
        request: Request<pb::GetManyRequest>,
    ) -> Result<Response<pb::GetManyResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.keys("keys", &request.keys)?;
        let keys = redis_keys(&call, &request.keys);
        let reply = self
            .redis
            .run(&call, Idempotency::Idempotent, |client| {
                let keys = keys.clone();
                async move { client.mget::<Value, _>(keys).await }
            })
            .await?;
        let values = reply_array(reply)?
            .into_iter()
            .map(|value| {
                reply_bytes(value).map(|value| pb::OptionalValue {
                    found: value.is_some(),
                    value: value.unwrap_or_default(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::GetManyResponse { values }))
    }

    async fn set_many(
        &self,
        request: Request<pb::SetManyRequest>,
    ) -> Result<Response<pb::SetManyResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.batch("entries", request.entries.len())?;
        let ttl = self.limits.ttl("ttl", request.ttl.as_ref())?;
        let mut keys = Vec::with_capacity(request.entries.len());
        let mut args = Vec::with_capacity(request.entries.len() + 2);
        args.push(ttl_arg(ttl));
        args.push(Value::from(if request.if_none_exist { "1" } else { "0" }));
        for (index, entry) in request.entries.into_iter().enumerate() {
            self.limits
                .key(&format!("entries[{index}].key"), &entry.key)?;
            self.limits
                .value(&format!("entries[{index}].value"), &entry.value)?;
            keys.push(call.namespace.key(&entry.key));
            args.push(Value::Bytes(entry.value));
        }
        let reply = self
            .redis
            .eval(&call, Idempotency::AtMostOnce, &KV_SET_MANY, keys, args)
            .await?;
        Ok(Response::new(pb::SetManyResponse {
            applied: reply_i64(reply)? == 1,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.keys("keys", &request.keys)?;
        let keys = redis_keys(&call, &request.keys);
        // UNLINK: same result as DEL, but Redis frees large values in the background.
        let deleted = self
            .redis
            .run(&call, Idempotency::AtMostOnce, |client| {
                let keys = keys.clone();
                async move { client.unlink::<i64, _>(keys).await }
            })
            .await?;
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn exists(
        &self,
        request: Request<pb::ExistsRequest>,
    ) -> Result<Response<pb::ExistsResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.keys("keys", &request.keys)?;
        let keys = redis_keys(&call, &request.keys);
        let count = self
            .redis
            .run(&call, Idempotency::Idempotent, |client| {
                let keys = keys.clone();
                async move { client.exists::<i64, _>(keys).await }
            })
            .await?;
        Ok(Response::new(pb::ExistsResponse { count }))
    }

    async fn expire(
        &self,
        request: Request<pb::ExpireRequest>,
    ) -> Result<Response<pb::ExpireResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.key("key", &request.key)?;
        let ttl = self.limits.required_ttl("ttl", request.ttl.as_ref())?;
        let condition = pb::expire_request::Condition::try_from(request.condition)
            .map_err(|_| unknown_enum("condition", request.condition))?;
        let option = match condition {
            pb::expire_request::Condition::Always => None,
            pb::expire_request::Condition::IfNoTtl => Some(ExpireOptions::NX),
            pb::expire_request::Condition::IfHasTtl => Some(ExpireOptions::XX),
            pb::expire_request::Condition::IfGreater => Some(ExpireOptions::GT),
            pb::expire_request::Condition::IfLess => Some(ExpireOptions::LT),
        };
        let key = call.namespace.key(&request.key);
        let applied = self
            .redis
            .run(&call, Idempotency::AtMostOnce, |client| {
                let (key, option) = (key.clone(), option.clone());
                async move { client.pexpire::<i64, _>(key, ttl as i64, option).await }
            })
            .await?;
        Ok(Response::new(pb::ExpireResponse {
            applied: applied == 1,
        }))
    }

    async fn persist(
        &self,
        request: Request<pb::PersistRequest>,
    ) -> Result<Response<pb::PersistResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.key("key", &request.key)?;
        let key = call.namespace.key(&request.key);
        let applied = self
            .redis
            .run(&call, Idempotency::AtMostOnce, |client| {
                let key = key.clone();
                async move { client.persist::<i64, _>(key).await }
            })
            .await?;
        Ok(Response::new(pb::PersistResponse {
            applied: applied == 1,
        }))
    }

    async fn get_ttl(
        &self,
        request: Request<pb::GetTtlRequest>,
    ) -> Result<Response<pb::GetTtlResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.key("key", &request.key)?;
        let key = call.namespace.key(&request.key);
        let pttl = self
            .redis
            .run(&call, Idempotency::Idempotent, |client| {
                let key = key.clone();
                async move { client.pttl::<i64, _>(key).await }
            })
            .await?;
        let status = ttl_status(pttl);
        Ok(Response::new(pb::GetTtlResponse {
            state: status.state,
            ttl: status.ttl,
        }))
    }

    async fn increment(
        &self,
        request: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.key("key", &request.key)?;
        let ttl = self.limits.ttl("ttl", request.ttl.as_ref())?;
        let key = call.namespace.key(&request.key);
        let delta = request.delta;
        let value = match ttl {
            None => {
                self.redis
                    .run(&call, Idempotency::AtMostOnce, |client| {
                        let key = key.clone();
                        async move { client.incr_by::<i64, _>(key, delta).await }
                    })
                    .await?
            }
            Some(ms) => reply_i64(
                self.redis
                    .eval(
                        &call,
                        Idempotency::AtMostOnce,
                        &KV_INCREMENT,
                        vec![key],
                        vec![Value::from(delta.to_string()), Value::from(ms.to_string())],
                    )
                    .await?,
            )?,
        };
        Ok(Response::new(pb::IncrementResponse { value }))
    }

    async fn increment_float(
        &self,
        request: Request<pb::IncrementFloatRequest>,
    ) -> Result<Response<pb::IncrementFloatResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.key("key", &request.key)?;
        if !request.delta.is_finite() {
            return Err(
                Error::invalid("delta", "must be a finite number (not NaN or infinite)").into(),
            );
        }
        let key = call.namespace.key(&request.key);
        let delta = request.delta;
        let value = self
            .redis
            .run(&call, Idempotency::AtMostOnce, |client| {
                let key = key.clone();
                async move { client.incr_by_float::<f64, _>(key, delta).await }
            })
            .await?;
        Ok(Response::new(pb::IncrementFloatResponse { value }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        self.limits.key("key", &request.key)?;
        self.limits.value("value", &request.value)?;
        let ttl = self.limits.ttl("ttl", request.ttl.as_ref())?;
        if ttl.is_some() && request.keep_ttl {
            return Err(Error::invalid("keep_ttl", "cannot be combined with ttl").into());
        }
        let (mode, expected) = match request.expectation {
            Some(Expectation::Expected(expected)) => {
                self.limits.value("expected", &expected)?;
                ("equals", Value::Bytes(expected))
            }
            Some(Expectation::ExpectAbsent(true)) => ("absent", Value::from("")),
            Some(Expectation::ExpectAbsent(false)) => {
                return Err(Error::invalid(
                    "expect_absent",
                    "must be true when set; to compare against a value, set expected",
                )
                .into());
            }
            None => {
                return Err(Error::invalid(
                    "expected",
                    "set either expected (the bytes the key must hold) or expect_absent",
                )
                .into());
            }
        };
        let keep_ttl = if request.keep_ttl { "1" } else { "0" };
        let reply = self
            .redis
            .eval(
                &call,
                Idempotency::AtMostOnce,
                &KV_COMPARE_AND_SWAP,
                vec![call.namespace.key(&request.key)],
                vec![
                    Value::from(mode),
                    expected,
                    Value::Bytes(request.value),
                    ttl_arg(ttl),
                    Value::from(keep_ttl),
                ],
            )
            .await?;
        let mut parts = reply_array(reply)?.into_iter();
        let swapped = parts.next().map(reply_i64).transpose()? == Some(1);
        let current = if swapped {
            None
        } else {
            reply_bytes(parts.next().unwrap_or(Value::Null))?
        };
        Ok(Response::new(pb::CompareAndSwapResponse {
            swapped,
            current_found: current.is_some(),
            current: current.unwrap_or_default(),
        }))
    }

    type ScanStream = ReceiverStream<Result<pb::ScanResponse, Status>>;

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<Self::ScanStream>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        let pattern = if request.pattern.is_empty() {
            "*".to_owned()
        } else {
            request.pattern
        };
        glob_pattern("pattern", &pattern, self.limits.max_key_bytes)?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE.min(self.limits.max_batch_items as u32),
            size if size as usize > self.limits.max_batch_items => {
                return Err(Error::invalid(
                    "page_size",
                    format!(
                        "is {size}; the limit is {} (GATEWAY_MAX_BATCH_ITEMS)",
                        self.limits.max_batch_items
                    ),
                )
                .into());
            }
            size => size,
        };
        if !request.r#type.is_empty() && !SCAN_TYPES.contains(&request.r#type.as_str()) {
            return Err(Error::invalid(
                "type",
                format!("must be one of {} or empty", SCAN_TYPES.join(", ")),
            )
            .into());
        }
        let scan = KeyScan {
            redis: self.redis.clone(),
            match_pattern: call.namespace.pattern(&pattern),
            page_size: page_size as usize,
            key_type: request.r#type,
            call,
        };
        let (pages, receiver) = mpsc::channel(3);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // One slot is kept for the closing error, so a client that stopped reading cannot
            // keep this task (and the drain) waiting to tell it why the scan ended.
            let Ok(last_word) = pages.clone().reserve_owned().await else {
                return;
            };
            let outcome = tokio::select! {
                outcome = scan.stream_to(&pages) => outcome,
                () = shutdown.cancelled() => Err(Error::ShuttingDown),
            };
            if let Err(err) = outcome {
                last_word.send(Err(err.into()));
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn transaction(
        &self,
        request: Request<pb::TransactionRequest>,
    ) -> Result<Response<pb::TransactionResponse>, Status> {
        let call = self.call(&request);
        let request = request.into_inner();
        let encoded = transaction::encode(&request, &call.namespace, &self.limits)?;
        let reply = self
            .redis
            .eval(
                &call,
                Idempotency::AtMostOnce,
                &KV_TRANSACTION,
                encoded.keys,
                encoded.args,
            )
            .await?;
        Ok(Response::new(transaction::decode(reply)?))
    }
}
