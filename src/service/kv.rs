//! The KeyValue service: Redis strings, counters, scans and transactions. Each handler
//! validates its request, makes one typed call on [`Redis`](crate::redis::Redis) and maps the
//! result back; conversions live in `kv_convert`.

use tonic::{Request, Response, Status};

use super::kv_convert::{
    expire_condition, set_condition, transaction, transaction_response, ttl_status,
};
use super::{Context, ResponseStream, optional_values};
use crate::auth::Permission;
use crate::error::Error;
use crate::limits::glob_pattern;
use crate::pb::key_value_compare_and_swap_request::Expectation as PbExpectation;
use crate::pb::key_value_server::KeyValue;
use crate::pb::{self};
use crate::redis::keys::pattern_is_internal;
use crate::redis::scan::Scan;
use crate::redis::strings::{Expectation, TtlChange};

/// Keys per Scan page when the request leaves `page_size` at 0.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Redis types a Scan may filter on.
const SCAN_TYPES: &[&str] = &["string", "hash", "list", "set", "zset", "stream"];

/// Serves `redisgateway.v1.KeyValue`.
#[derive(Clone)]
pub struct KeyValueService {
    /// The pool, limits and shared state.
    context: Context,
}

impl KeyValueService {
    /// A KeyValue service over `context`.
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

/// A write's TTL from its `ttl` and `keep_ttl` fields.
fn ttl_change(ttl_ms: Option<u64>, keep_ttl: bool) -> Result<TtlChange, Error> {
    match (ttl_ms, keep_ttl) {
        (Some(_), true) => Err(Error::invalid("keep_ttl", "cannot be combined with ttl")),
        (Some(ms), false) => Ok(TtlChange::Millis(ms)),
        (None, true) => Ok(TtlChange::Keep),
        (None, false) => Ok(TtlChange::Clear),
    }
}

#[tonic::async_trait]
impl KeyValue for KeyValueService {
    async fn get(
        &self,
        request: Request<pb::KeyValueGetRequest>,
    ) -> Result<Response<pb::KeyValueGetResponse>, Status> {
        let call = self.context.call(&request);
        if request.get_ref().refresh_ttl.is_some() {
            // Refreshing the TTL writes.
            self.context.require(&request, Permission::Write)?;
        }
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("key", &request.key)?;
        let refresh = limits.ttl("refresh_ttl", request.refresh_ttl.as_ref())?;
        let redis = &self.context.redis;
        let cached =
            refresh.is_none() && redis.near_cache().wanted(&request.key, request.near_cache);
        let (value, ttl, near_cache_hit) = if cached {
            redis
                .get_near(&call, request.key, request.include_ttl)
                .await?
        } else if refresh.is_none() && !request.include_ttl {
            (redis.get(&call, request.key).await?, None, false)
        } else {
            let (value, ttl) = redis
                .get_with_ttl(&call, request.key, refresh, request.include_ttl)
                .await?;
            (value, ttl, false)
        };
        let value_bytes = value.as_ref().map_or(0, |value| value.len());
        limits.response(
            "Get",
            value_bytes,
            "Raise GATEWAY_MAX_RESPONSE_BYTES to read it.",
        )?;
        Ok(Response::new(pb::KeyValueGetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            ttl: ttl.map(ttl_status),
            near_cache_hit,
        }))
    }

    async fn set(
        &self,
        request: Request<pb::KeyValueSetRequest>,
    ) -> Result<Response<pb::KeyValueSetResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("key", &request.key)?;
        limits.value("value", &request.value)?;
        let ttl = ttl_change(limits.ttl("ttl", request.ttl.as_ref())?, request.keep_ttl)?;
        let condition = set_condition(request.condition)?;
        let outcome = self
            .context
            .redis
            .set(
                &call,
                request.key,
                request.value,
                condition,
                ttl,
                request.return_previous,
            )
            .await?;
        let previous = outcome.previous.flatten();
        Ok(Response::new(pb::KeyValueSetResponse {
            applied: outcome.applied,
            previous_found: previous.is_some(),
            previous: previous.unwrap_or_default(),
        }))
    }

    async fn get_many(
        &self,
        request: Request<pb::KeyValueGetManyRequest>,
    ) -> Result<Response<pb::KeyValueGetManyResponse>, Status> {
        let call = self.context.call(&request).with_operands("keys", "keys");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.keys("keys", &request.keys)?;
        let redis = &self.context.redis;
        let cached = request.near_cache
            || request
                .keys
                .iter()
                .all(|key| redis.near_cache().wanted(key, false));
        let (values, hits) = if cached && redis.near_cache().enabled() {
            redis.get_many_near(&call, request.keys).await?
        } else {
            (redis.get_many(&call, request.keys).await?, 0)
        };
        let total = values.iter().flatten().map(|value| value.len()).sum();
        limits.response(
            "GetMany",
            total,
            "Ask for fewer keys per GetMany, or read them one by one with Get.",
        )?;
        Ok(Response::new(pb::KeyValueGetManyResponse {
            values: optional_values(values),
            near_cache_hits: u32::try_from(hits).unwrap_or(u32::MAX),
        }))
    }

    async fn set_many(
        &self,
        request: Request<pb::KeyValueSetManyRequest>,
    ) -> Result<Response<pb::KeyValueSetManyResponse>, Status> {
        let call = self
            .context
            .call(&request)
            .with_operands("entries", "entries");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.batch("entries", request.entries.len())?;
        let ttl = limits.ttl("ttl", request.ttl.as_ref())?;
        let mut entries = Vec::with_capacity(request.entries.len());
        for (index, entry) in request.entries.into_iter().enumerate() {
            limits.key(&format!("entries[{index}].key"), &entry.key)?;
            limits.value(&format!("entries[{index}].value"), &entry.value)?;
            entries.push((entry.key, entry.value));
        }
        let applied = self
            .context
            .redis
            .set_many(&call, entries, ttl, request.if_none_exist)
            .await?;
        Ok(Response::new(pb::KeyValueSetManyResponse { applied }))
    }

    async fn delete(
        &self,
        request: Request<pb::KeyValueDeleteRequest>,
    ) -> Result<Response<pb::KeyValueDeleteResponse>, Status> {
        let call = self.context.call(&request).with_operands("keys", "keys");
        let request = request.into_inner();
        self.context.limits().keys("keys", &request.keys)?;
        let deleted = self.context.redis.delete(&call, request.keys).await?;
        Ok(Response::new(pb::KeyValueDeleteResponse { deleted }))
    }

    async fn exists(
        &self,
        request: Request<pb::KeyValueExistsRequest>,
    ) -> Result<Response<pb::KeyValueExistsResponse>, Status> {
        let call = self.context.call(&request).with_operands("keys", "keys");
        let request = request.into_inner();
        self.context.limits().keys("keys", &request.keys)?;
        let count = self.context.redis.exists(&call, request.keys).await?;
        Ok(Response::new(pb::KeyValueExistsResponse { count }))
    }

    async fn expire(
        &self,
        request: Request<pb::KeyValueExpireRequest>,
    ) -> Result<Response<pb::KeyValueExpireResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("key", &request.key)?;
        let ttl = limits.required_ttl("ttl", request.ttl.as_ref())?;
        let condition = expire_condition(request.condition)?;
        let applied = self
            .context
            .redis
            .expire(&call, request.key, ttl, condition)
            .await?;
        Ok(Response::new(pb::KeyValueExpireResponse { applied }))
    }

    async fn persist(
        &self,
        request: Request<pb::KeyValuePersistRequest>,
    ) -> Result<Response<pb::KeyValuePersistResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        self.context.limits().key("key", &request.key)?;
        let applied = self.context.redis.persist(&call, request.key).await?;
        Ok(Response::new(pb::KeyValuePersistResponse { applied }))
    }

    async fn get_ttl(
        &self,
        request: Request<pb::KeyValueGetTtlRequest>,
    ) -> Result<Response<pb::KeyValueGetTtlResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        self.context.limits().key("key", &request.key)?;
        let status = ttl_status(self.context.redis.ttl(&call, request.key).await?);
        Ok(Response::new(pb::KeyValueGetTtlResponse {
            state: status.state,
            ttl: status.ttl,
        }))
    }

    async fn increment(
        &self,
        request: Request<pb::KeyValueIncrementRequest>,
    ) -> Result<Response<pb::KeyValueIncrementResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("key", &request.key)?;
        let ttl = limits.ttl("ttl", request.ttl.as_ref())?;
        let value = self
            .context
            .redis
            .increment(&call, request.key, request.delta, ttl)
            .await?;
        Ok(Response::new(pb::KeyValueIncrementResponse { value }))
    }

    async fn increment_float(
        &self,
        request: Request<pb::KeyValueIncrementFloatRequest>,
    ) -> Result<Response<pb::KeyValueIncrementFloatResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        self.context.limits().key("key", &request.key)?;
        if !request.delta.is_finite() {
            return Err(
                Error::invalid("delta", "must be a finite number (not NaN or infinite)").into(),
            );
        }
        let value = self
            .context
            .redis
            .increment_float(&call, request.key, request.delta)
            .await?;
        Ok(Response::new(pb::KeyValueIncrementFloatResponse { value }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::KeyValueCompareAndSwapRequest>,
    ) -> Result<Response<pb::KeyValueCompareAndSwapResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("key", &request.key)?;
        limits.value("value", &request.value)?;
        let ttl = ttl_change(limits.ttl("ttl", request.ttl.as_ref())?, request.keep_ttl)?;
        let expected = match request.expectation {
            Some(PbExpectation::Expected(expected)) => {
                limits.value("expected", &expected)?;
                Expectation::Equals(expected)
            }
            Some(PbExpectation::ExpectAbsent(true)) => Expectation::Absent,
            Some(PbExpectation::ExpectAbsent(false)) => {
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
        let outcome = self
            .context
            .redis
            .compare_and_swap(&call, request.key, expected, request.value, ttl)
            .await?;
        Ok(Response::new(pb::KeyValueCompareAndSwapResponse {
            swapped: outcome.swapped,
            current_found: outcome.current.is_some(),
            current: outcome.current.unwrap_or_default(),
        }))
    }

    type ScanStream = ResponseStream<pb::KeyValueScanResponse>;

    async fn scan(
        &self,
        request: Request<pb::KeyValueScanRequest>,
    ) -> Result<Response<Self::ScanStream>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let limits = self.context.limits();
        let pattern = if request.pattern.is_empty() {
            "*"
        } else {
            request.pattern.as_str()
        };
        glob_pattern("pattern", pattern, limits.max_key_bytes)?;
        if pattern_is_internal(pattern) {
            return Err(Error::invalid(
                "pattern",
                "matches only keys reserved for the gateway's locks and sessions",
            )
            .into());
        }
        let page_size = limits.page_size("page_size", request.page_size, DEFAULT_PAGE_SIZE)?;
        let key_type = match request.r#type.as_str() {
            "" => None,
            name if SCAN_TYPES.contains(&name) => Some(request.r#type.clone()),
            _ => {
                return Err(Error::invalid(
                    "type",
                    format!("must be one of {} or empty", SCAN_TYPES.join(", ")),
                )
                .into());
            }
        };
        let scan = Scan::keys(
            self.context.redis.clone(),
            call,
            pattern,
            key_type,
            page_size,
            limits.max_response_bytes,
        );
        let stream = self.context.stream(|sink| async move {
            scan.run(|keys| sink.send(pb::KeyValueScanResponse { keys }))
                .await
        });
        Ok(Response::new(stream))
    }

    type WatchExpirationsStream = ResponseStream<pb::KeyValueWatchExpirationsResponse>;

    async fn watch_expirations(
        &self,
        request: Request<pb::KeyValueWatchExpirationsRequest>,
    ) -> Result<Response<Self::WatchExpirationsStream>, Status> {
        let call = self.context.call(&request);
        let stream =
            super::kv_watch::watch_expirations(&self.context, call, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn transaction(
        &self,
        request: Request<pb::KeyValueTransactionRequest>,
    ) -> Result<Response<pb::KeyValueTransactionResponse>, Status> {
        let call = self.context.call(&request).with_operands("ops", "ops");
        let (guards, ops) = transaction(request.into_inner(), self.context.limits())?;
        let outcome = self.context.redis.transaction(&call, guards, ops).await?;
        Ok(Response::new(transaction_response(outcome)))
    }
}
