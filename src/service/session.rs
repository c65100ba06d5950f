//! The Session service: server-side user sessions with sliding idle expiry, an optional
//! absolute cap, rotation, optimistic concurrency and per-user revocation. Each handler
//! validates its request, makes one typed call on [`Redis`](crate::redis::Redis) and maps the
//! result back; WatchEnded streams from `session_watch`.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{Context, ResponseStream, timestamp};
use crate::error::Error;
use crate::limits::Limits;
use crate::pb;
use crate::pb::session_server::Session;
use crate::redis::sessions::{SESSION_ID_LEN, SessionRecord, UpdateOutcome, is_session_id};

/// Serves `redisgateway.v1.Session`.
#[derive(Clone)]
pub struct SessionService {
    /// The pool, limits and shared state.
    context: Context,
}

impl SessionService {
    /// A Session service over `context`.
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

/// A session id must have the shape the gateway mints.
fn session_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid("session_id", "must not be empty"));
    }
    if !is_session_id(id) {
        return Err(Error::invalid(
            "session_id",
            format!(
                "is not a session id: {SESSION_ID_LEN} URL-safe characters as Session.Create returns"
            ),
        ));
    }
    Ok(())
}

/// A user id: 1 to `max_key_bytes` bytes, no control characters (the index separates user
/// and session ids with a newline).
fn user_id(limits: &Limits, id: &str) -> Result<(), Error> {
    limits.name("user_id", id)?;
    if id.chars().any(char::is_control) {
        return Err(Error::invalid(
            "user_id",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Data entries to write: at most `max_batch_items`, names and values within bounds.
fn data_entries(
    limits: &Limits,
    field: &str,
    data: HashMap<String, String>,
) -> Result<Vec<(String, String)>, Error> {
    if data.len() > limits.max_batch_items {
        return Err(Error::invalid(
            field,
            format!(
                "has {} entries; the limit is {} (GATEWAY_MAX_BATCH_ITEMS)",
                data.len(),
                limits.max_batch_items
            ),
        ));
    }
    let mut entries = Vec::with_capacity(data.len());
    for (name, value) in data {
        limits.name(field, &name)?;
        limits.value(&format!("{field}[{name}]"), value.as_bytes())?;
        entries.push((name, value));
    }
    Ok(entries)
}

/// An optional timeout, as a duration within the TTL bounds.
fn timeout(
    limits: &Limits,
    field: &str,
    value: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, Error> {
    Ok(limits.ttl(field, value)?.map(Duration::from_millis))
}

/// A stored session as the API returns it.
fn session_info(record: SessionRecord) -> pb::SessionInfo {
    pb::SessionInfo {
        session_id: record.id,
        user_id: record.user_id,
        data: record.data.into_iter().collect(),
        created_at: Some(timestamp(record.created_ms)),
        last_accessed_at: Some(timestamp(record.accessed_ms)),
        expires_at: Some(timestamp(record.expires_ms)),
        version: record.version,
    }
}

/// NOT_FOUND for a session that is absent or expired.
fn not_found() -> Status {
    Error::NotFound("no such session: it never existed, expired, was deleted or rotated".into())
        .into()
}

#[tonic::async_trait]
impl Session for SessionService {
    async fn create(
        &self,
        request: Request<pb::SessionCreateRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let limits = self.context.limits();
        user_id(limits, &request.user_id)?;
        let data = data_entries(limits, "data", request.data)?;
        let defaults = self.context.shared.session_defaults;
        let idle = timeout(limits, "idle_timeout", request.idle_timeout.as_ref())?
            .unwrap_or(defaults.idle);
        let absolute = timeout(
            limits,
            "absolute_timeout",
            request.absolute_timeout.as_ref(),
        )?
        .or(defaults.absolute);
        let record = self
            .context
            .redis
            .session_create(&call, request.user_id, data, idle, absolute)
            .await?;
        Ok(Response::new(session_info(record)))
    }

    async fn get(
        &self,
        request: Request<pb::SessionGetRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        session_id(&request.session_id)?;
        let record = self
            .context
            .redis
            .session_get(&call, request.session_id, request.touch)
            .await?;
        record
            .map(|record| Response::new(session_info(record)))
            .ok_or_else(not_found)
    }

    async fn update(
        &self,
        request: Request<pb::SessionUpdateRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        session_id(&request.session_id)?;
        let limits = self.context.limits();
        let set = data_entries(limits, "set", request.set)?;
        if request.remove.len() > limits.max_batch_items {
            return Err(Error::invalid(
                "remove",
                format!(
                    "has {} entries; the limit is {} (GATEWAY_MAX_BATCH_ITEMS)",
                    request.remove.len(),
                    limits.max_batch_items
                ),
            )
            .into());
        }
        for (index, name) in request.remove.iter().enumerate() {
            limits.name(&format!("remove[{index}]"), name)?;
        }
        let outcome = self
            .context
            .redis
            .session_update(
                &call,
                request.session_id,
                set,
                request.remove,
                request.expected_version,
            )
            .await?;
        match outcome {
            UpdateOutcome::Updated(record) => Ok(Response::new(session_info(record))),
            UpdateOutcome::Missing => Err(not_found()),
            UpdateOutcome::VersionMismatch { current } => Err(Error::FailedPrecondition(format!(
                "expected_version: the session is at version {current}; nothing was changed"
            ))
            .into()),
        }
    }

    async fn touch(
        &self,
        request: Request<pb::SessionTouchRequest>,
    ) -> Result<Response<pb::SessionTouchResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        session_id(&request.session_id)?;
        let expires = self
            .context
            .redis
            .session_touch(&call, request.session_id)
            .await?
            .ok_or_else(not_found)?;
        Ok(Response::new(pb::SessionTouchResponse {
            expires_at: Some(timestamp(expires)),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::SessionDeleteRequest>,
    ) -> Result<Response<pb::SessionDeleteResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        session_id(&request.session_id)?;
        let deleted = self
            .context
            .redis
            .session_delete(&call, request.session_id)
            .await?;
        Ok(Response::new(pb::SessionDeleteResponse { deleted }))
    }

    async fn list_by_user(
        &self,
        request: Request<pb::SessionListByUserRequest>,
    ) -> Result<Response<pb::SessionListByUserResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let limits = self.context.limits();
        user_id(limits, &request.user_id)?;
        let sessions = self
            .context
            .redis
            .session_list(&call, request.user_id)
            .await?;
        let bytes = sessions
            .iter()
            .flat_map(|session| &session.data)
            .map(|(name, value)| name.len() + value.len())
            .sum();
        limits.response(
            "Session.ListByUser",
            bytes,
            "Revoke old sessions with DeleteByUser, or keep less data per session.",
        )?;
        Ok(Response::new(pb::SessionListByUserResponse {
            sessions: sessions.into_iter().map(session_info).collect(),
        }))
    }

    async fn delete_by_user(
        &self,
        request: Request<pb::SessionDeleteByUserRequest>,
    ) -> Result<Response<pb::SessionDeleteByUserResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        user_id(self.context.limits(), &request.user_id)?;
        let deleted = self
            .context
            .redis
            .session_delete_user(&call, request.user_id)
            .await?;
        Ok(Response::new(pb::SessionDeleteByUserResponse { deleted }))
    }

    type WatchEndedStream = ResponseStream<pb::SessionWatchEndedResponse>;

    async fn watch_ended(
        &self,
        request: Request<pb::SessionWatchEndedRequest>,
    ) -> Result<Response<Self::WatchEndedStream>, Status> {
        let call = self.context.call(&request);
        let stream =
            super::session_watch::watch_ended(&self.context, call, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn rotate(
        &self,
        request: Request<pb::SessionRotateRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        session_id(&request.session_id)?;
        let record = self
            .context
            .redis
            .session_rotate(&call, request.session_id)
            .await?
            .ok_or_else(not_found)?;
        Ok(Response::new(session_info(record)))
    }
}
