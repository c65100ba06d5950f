//! The Hash service: field-level access to Redis hashes. Each handler validates its request,
//! makes one typed call on [`Redis`](crate::redis::Redis) and maps the result back.

use std::collections::HashMap;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::{Context, ResponseStream, optional_values};
use crate::error::Error;
use crate::limits::{Limits, glob_pattern};
use crate::pb;
use crate::pb::hash_server::Hash;
use crate::redis::scan::Scan;

/// Fields per Scan page when the request leaves `page_size` at 0.
const DEFAULT_PAGE_SIZE: usize = 100;

/// Serves `redisgateway.v1.Hash`.
#[derive(Clone)]
pub struct HashService {
    /// The pool, limits and shared state.
    context: Context,
}

impl HashService {
    /// A Hash service over `context`.
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

/// Checks a map of fields to write: 1 to `max_batch_items` of them, each name and value
/// within bounds; returns them as pairs.
fn fields_to_write(
    limits: &Limits,
    fields: HashMap<String, Bytes>,
) -> Result<Vec<(String, Bytes)>, Error> {
    limits.batch("fields", fields.len())?;
    let mut pairs = Vec::with_capacity(fields.len());
    for (field, value) in fields {
        limits.name("fields", &field)?;
        limits.value(&format!("fields[{field}]"), &value)?;
        pairs.push((field, value));
    }
    Ok(pairs)
}

/// Total value bytes of `fields`, for the response limit.
fn value_bytes<'a>(values: impl Iterator<Item = &'a Bytes>) -> usize {
    values.map(Bytes::len).sum()
}

#[tonic::async_trait]
impl Hash for HashService {
    async fn set(
        &self,
        request: Request<pb::HashSetRequest>,
    ) -> Result<Response<pb::HashSetResponse>, Status> {
        let call = self.context.call(&request).with_operands("name", "fields");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        let fields = fields_to_write(limits, request.fields)?;
        // A zero TTL means "leave the TTL as it is", as documented for this RPC.
        let ttl = match request.ttl {
            Some(ttl) if ttl.seconds == 0 && ttl.nanos == 0 => None,
            ttl => limits.ttl("ttl", ttl.as_ref())?,
        };
        let added = self
            .context
            .redis
            .hash_set(&call, request.name, fields, ttl)
            .await?;
        Ok(Response::new(pb::HashSetResponse { added }))
    }

    async fn set_if_absent(
        &self,
        request: Request<pb::HashSetIfAbsentRequest>,
    ) -> Result<Response<pb::HashSetIfAbsentResponse>, Status> {
        let call = self.context.call(&request).with_operands("name", "value");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        limits.name("field", &request.field)?;
        limits.value("value", &request.value)?;
        let applied = self
            .context
            .redis
            .hash_set_if_absent(&call, request.name, request.field, request.value)
            .await?;
        Ok(Response::new(pb::HashSetIfAbsentResponse { applied }))
    }

    async fn get(
        &self,
        request: Request<pb::HashGetRequest>,
    ) -> Result<Response<pb::HashGetResponse>, Status> {
        let call = self.context.call(&request).with_operands("field", "field");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        limits.name("field", &request.field)?;
        let value = self
            .context
            .redis
            .hash_get(&call, request.name, request.field)
            .await?;
        limits.response(
            "Hash.Get",
            value_bytes(value.iter()),
            "Raise GATEWAY_MAX_RESPONSE_BYTES to read it.",
        )?;
        Ok(Response::new(pb::HashGetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn get_many(
        &self,
        request: Request<pb::HashGetManyRequest>,
    ) -> Result<Response<pb::HashGetManyResponse>, Status> {
        let call = self
            .context
            .call(&request)
            .with_operands("fields", "fields");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        limits.names("fields", &request.fields)?;
        let values = self
            .context
            .redis
            .hash_get_many(&call, request.name, request.fields)
            .await?;
        limits.response(
            "Hash.GetMany",
            value_bytes(values.iter().flatten()),
            "Ask for fewer fields per GetMany, or use Hash.Scan.",
        )?;
        Ok(Response::new(pb::HashGetManyResponse {
            values: optional_values(values),
        }))
    }

    async fn get_all(
        &self,
        request: Request<pb::HashGetAllRequest>,
    ) -> Result<Response<pb::HashGetAllResponse>, Status> {
        let call = self.context.call(&request).with_operands("name", "name");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        let fields = self.context.redis.hash_get_all(&call, request.name).await?;
        limits.response(
            "Hash.GetAll",
            value_bytes(fields.iter().map(|(_, value)| value)),
            "Read this hash page by page with Hash.Scan.",
        )?;
        Ok(Response::new(pb::HashGetAllResponse {
            fields: fields.into_iter().collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::HashDeleteRequest>,
    ) -> Result<Response<pb::HashDeleteResponse>, Status> {
        let call = self
            .context
            .call(&request)
            .with_operands("fields", "fields");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        limits.names("fields", &request.fields)?;
        let deleted = self
            .context
            .redis
            .hash_delete(&call, request.name, request.fields)
            .await?;
        Ok(Response::new(pb::HashDeleteResponse { deleted }))
    }

    async fn exists(
        &self,
        request: Request<pb::HashExistsRequest>,
    ) -> Result<Response<pb::HashExistsResponse>, Status> {
        let call = self.context.call(&request).with_operands("field", "field");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        limits.name("field", &request.field)?;
        let exists = self
            .context
            .redis
            .hash_exists(&call, request.name, request.field)
            .await?;
        Ok(Response::new(pb::HashExistsResponse { exists }))
    }

    async fn len(
        &self,
        request: Request<pb::HashLenRequest>,
    ) -> Result<Response<pb::HashLenResponse>, Status> {
        let call = self.context.call(&request).with_operands("name", "name");
        let request = request.into_inner();
        self.context.limits().key("name", &request.name)?;
        let len = self.context.redis.hash_len(&call, request.name).await?;
        Ok(Response::new(pb::HashLenResponse { len }))
    }

    async fn increment(
        &self,
        request: Request<pb::HashIncrementRequest>,
    ) -> Result<Response<pb::HashIncrementResponse>, Status> {
        let call = self.context.call(&request).with_operands("field", "delta");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        limits.name("field", &request.field)?;
        let value = self
            .context
            .redis
            .hash_increment(&call, request.name, request.field, request.delta)
            .await?;
        Ok(Response::new(pb::HashIncrementResponse { value }))
    }

    async fn increment_float(
        &self,
        request: Request<pb::HashIncrementFloatRequest>,
    ) -> Result<Response<pb::HashIncrementFloatResponse>, Status> {
        let call = self.context.call(&request).with_operands("field", "delta");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        limits.name("field", &request.field)?;
        if !request.delta.is_finite() {
            return Err(
                Error::invalid("delta", "must be a finite number (not NaN or infinite)").into(),
            );
        }
        let value = self
            .context
            .redis
            .hash_increment_float(&call, request.name, request.field, request.delta)
            .await?;
        Ok(Response::new(pb::HashIncrementFloatResponse { value }))
    }

    type ScanStream = ResponseStream<pb::HashScanResponse>;

    async fn scan(
        &self,
        request: Request<pb::HashScanRequest>,
    ) -> Result<Response<Self::ScanStream>, Status> {
        let call = self.context.call(&request).with_operands("name", "name");
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.key("name", &request.name)?;
        let pattern = if request.pattern.is_empty() {
            "*"
        } else {
            request.pattern.as_str()
        };
        glob_pattern("pattern", pattern, limits.max_key_bytes)?;
        let page_size = limits.page_size("page_size", request.page_size, DEFAULT_PAGE_SIZE)?;
        let scan = Scan::hash_fields(
            self.context.redis.clone(),
            call,
            request.name,
            pattern,
            page_size,
            limits.max_response_bytes,
        );
        let stream = self.context.stream(|sink| async move {
            scan.run(|fields| {
                sink.send(pb::HashScanResponse {
                    fields: fields.into_iter().collect(),
                })
            })
            .await
        });
        Ok(Response::new(stream))
    }
}
