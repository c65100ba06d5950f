//! The Lock service: leases with owner and fencing tokens, fair blocking acquisition, lock
//! delay, and Hold, a stream that keeps a lease renewed while it is open.
//!
//! Waiting: a waiter queues in Redis (arrival order across every replica) and sleeps until the
//! process's one pub/sub subscription hears its id (a release wakes only the first waiter), or
//! until a jittered backoff or the lock's own expiry says to look again. Whatever way a waiting
//! call ends (answered, timed out, cancelled, Redis failing), an [`Undo`] takes its place out
//! of the queue at once and, if an attempt's outcome is unknown, releases the token it sent.

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::{Context, ResponseStream, Sink, duration, timestamp};
use crate::error::Error;
use crate::limits::Limits;
use crate::pb;
use crate::pb::lock_hold_response::{Acquired, Event, Lost, Renewed};
use crate::pb::lock_server::Lock;
use crate::redis::keys::LockKeys;
use crate::redis::locks::{AcquireRequest, Attempt, WAITER_LEASE, random_id};
use crate::redis::{Call, Namespace, Redis};

/// First pause between a waiter's own retries; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between a waiter's own retries (each retry also renews its queue lease).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Length of an owner token: 128 bits as hex.
const TOKEN_LEN: usize = 32;

/// Serves `redisgateway.v1.Lock`.
#[derive(Clone)]
pub struct LockService {
    /// The pool, limits and shared state.
    context: Context,
}

impl LockService {
    /// A Lock service over `context`.
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

/// An owner token must have the shape Acquire returns (also used by Transaction's `lock_held`).
pub(crate) fn token(field: &str, token: &str) -> Result<(), Error> {
    if token.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if token.len() != TOKEN_LEN || !token.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            field,
            format!("is not a lock token: {TOKEN_LEN} hex digits as Lock.Acquire returns"),
        ));
    }
    Ok(())
}

/// An owner label: optional, at most `max_key_bytes` bytes.
fn owner(limits: &Limits, owner: &str) -> Result<(), Error> {
    if owner.len() > limits.max_key_bytes {
        return Err(Error::invalid(
            "owner",
            format!(
                "is {} bytes; the limit is {} (GATEWAY_MAX_KEY_BYTES)",
                owner.len(),
                limits.max_key_bytes
            ),
        ));
    }
    Ok(())
}

/// A validated acquisition: what Acquire and Hold both ask for.
struct Wanted {
    keys: LockKeys,
    owner: String,
    ttl_ms: u64,
    delay_ms: u64,
    wait: Duration,
}

/// The fields Acquire and Hold requests share.
struct AcquisitionFields<'a> {
    name: &'a str,
    ttl: Option<&'a prost_types::Duration>,
    wait_timeout: Option<&'a prost_types::Duration>,
    owner: &'a str,
    lock_delay: Option<&'a prost_types::Duration>,
}

impl<'a> From<&'a pb::LockAcquireRequest> for AcquisitionFields<'a> {
    fn from(request: &'a pb::LockAcquireRequest) -> Self {
        Self {
            name: &request.name,
            ttl: request.ttl.as_ref(),
            wait_timeout: request.wait_timeout.as_ref(),
            owner: &request.owner,
            lock_delay: request.lock_delay.as_ref(),
        }
    }
}

impl<'a> From<&'a pb::LockHoldRequest> for AcquisitionFields<'a> {
    fn from(request: &'a pb::LockHoldRequest) -> Self {
        Self {
            name: &request.name,
            ttl: request.ttl.as_ref(),
            wait_timeout: request.wait_timeout.as_ref(),
            owner: &request.owner,
            lock_delay: request.lock_delay.as_ref(),
        }
    }
}

impl Wanted {
    /// Validates an Acquire or Hold request.
    fn new<'a>(
        limits: &Limits,
        namespace: &Namespace,
        request: impl Into<AcquisitionFields<'a>>,
    ) -> Result<Self, Error> {
        let request = request.into();
        limits.name("name", request.name)?;
        let ttl_ms = limits.required_ttl("ttl", request.ttl)?;
        let wait = limits.wait("wait_timeout", request.wait_timeout)?;
        let delay_ms = limits.wait("lock_delay", request.lock_delay)?.as_millis() as u64;
        owner(limits, request.owner)?;
        Ok(Self {
            keys: namespace.lock_keys(request.name),
            owner: request.owner.to_owned(),
            ttl_ms,
            delay_ms,
            wait,
        })
    }

    fn hash_tag(&self) -> String {
        format!("{{{}}}", self.keys.tag)
    }
}

/// A lock this call now holds.
struct Granted {
    token: String,
    fencing_token: u64,
    expires_ms: i64,
    /// When the attempt that won was sent: the lease runs at most `ttl` from here.
    sent_at: Instant,
}

/// What a waiting call leaves in Redis until it ends well: its place in the queue, and (while
/// an attempt's outcome is unknown) maybe the lock itself. Dropping it undoes both in a
/// tracked background task, so a cancelled call leaves nothing behind.
struct Undo {
    context: Context,
    keys: LockKeys,
    namespace: Namespace,
    token: String,
    ttl_ms: u64,
    /// Queued under this waiter id.
    waiter: Option<String>,
    /// An acquisition attempt with `token` was sent and its answer is not known.
    maybe_holding: bool,
}

impl Undo {
    /// Nothing is left to undo (the lock was granted and the queue entry removed with it).
    fn disarm(mut self) {
        self.waiter = None;
        self.maybe_holding = false;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.waiter.is_none() && !self.maybe_holding {
            return;
        }
        // Dropped outside a runtime only when the process is going away; Redis then ends the
        // queue entry (lease) and any lock (ttl) by itself.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let redis = self.context.redis.clone();
        let keys = self.keys.clone();
        let namespace = self.namespace.clone();
        let token = std::mem::take(&mut self.token);
        let waiter = self.waiter.take();
        let release = std::mem::take(&mut self.maybe_holding);
        let ttl = Duration::from_millis(self.ttl_ms);
        self.context.shared.tasks.spawn(async move {
            let call = Call::new(None, redis.command_timeout(), namespace);
            if let Some(waiter) = waiter
                && let Err(err) = redis.lock_leave(&call, &keys, &waiter).await
            {
                tracing::debug!(error = %err, "leaving a lock queue failed; its lease ends it");
            }
            if release {
                release_in_background(&redis, &call, &keys, &token, ttl).await;
            }
        });
    }
}

/// Releases `token` (owner-checked), retrying while Redis is unreachable until the lease would
/// have run out anyway.
async fn release_in_background(
    redis: &Redis,
    call: &Call,
    keys: &LockKeys,
    token: &str,
    ttl: Duration,
) {
    let give_up = Instant::now() + ttl;
    let mut pause = FIRST_BACKOFF;
    loop {
        match redis.lock_release(call, keys, token).await {
            Ok(released) => {
                if released {
                    tracing::info!("released a lock taken by a call that did not learn of it");
                }
                return;
            }
            Err(err) if Instant::now() + pause < give_up => {
                tracing::debug!(error = %err, "releasing an unconfirmed lock failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
            Err(err) => {
                tracing::debug!(error = %err, "releasing an unconfirmed lock failed; its lease ends it");
                return;
            }
        }
    }
}

/// A pause of between half and all of `backoff`, so waiters that missed the same wake-up do
/// not retry in step.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    let spread = half.as_micros() as u64;
    half + Duration::from_micros(if spread == 0 {
        0
    } else {
        rand::random_range(0..spread)
    })
}

/// The error for an acquisition whose outcome is unknown: the lock is not this call's, and the
/// background release makes sure nobody holds it by mistake.
fn unknown_outcome(err: Error) -> Error {
    match err {
        Error::Unavailable { .. } => Error::Unavailable {
            message: "Redis failed after the acquisition was sent; the lock is not granted to \
                      this call, and the gateway releases it if it was taken"
                .into(),
            outcome_unknown: false,
        },
        Error::DeadlineExceeded { .. } => Error::DeadlineExceeded {
            outcome_unknown: false,
        },
        other => other,
    }
}

/// Takes the lock for `wanted`, waiting up to its `wait` (cut short by the call's deadline):
/// `None` when it stayed busy.
async fn acquire(
    context: &Context,
    call: &Call,
    wanted: &Wanted,
) -> Result<Option<Granted>, Error> {
    let mut undo = Undo {
        context: context.clone(),
        keys: wanted.keys.clone(),
        namespace: call.namespace.clone(),
        token: random_id(),
        ttl_ms: wanted.ttl_ms,
        waiter: None,
        maybe_holding: false,
    };
    let wait = call
        .remaining()
        .map_or(wanted.wait, |left| left.min(wanted.wait));
    let registration = if wait.is_zero() {
        None
    } else {
        Some(context.shared.lock_wakeups.register()?)
    };
    let give_up = Instant::now() + wait;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let request = AcquireRequest {
            token: &undo.token,
            owner: &wanted.owner,
            ttl_ms: wanted.ttl_ms,
            delay_ms: wanted.delay_ms,
            waiter: registration.as_ref().map(|registration| registration.id()),
        };
        let sent_at = Instant::now();
        undo.maybe_holding = true;
        if let Some(registration) = &registration {
            undo.waiter = Some(registration.id().to_owned());
        }
        let attempt = match context
            .redis
            .lock_try_acquire(call, &wanted.keys, &request)
            .await
        {
            Ok(attempt) => attempt,
            Err(err) if err.outcome_unknown() => {
                undo.maybe_holding = true;
                return Err(unknown_outcome(err));
            }
            // Known not to hold the lock (not sent, or released again when no replica
            // confirmed it): the error says why.
            Err(err) => {
                undo.maybe_holding = false;
                return Err(err);
            }
        };
        match attempt {
            Attempt::Acquired {
                fencing_token,
                expires_ms,
            } => {
                let token = undo.token.clone();
                undo.disarm();
                return Ok(Some(Granted {
                    token,
                    fencing_token,
                    expires_ms,
                    sent_at,
                }));
            }
            Attempt::Busy { frees_in } => {
                undo.maybe_holding = false;
                let now = Instant::now();
                let Some(registration) = &registration else {
                    return Ok(None);
                };
                if now >= give_up {
                    return Ok(None);
                }
                // Look again when woken, when the lease could run out, or after the backoff,
                // whichever comes first; never past the wait, and often enough to keep the
                // queue lease alive.
                let nap = jittered(backoff)
                    .min(frees_in.map_or(MAX_BACKOFF, |left| left + Duration::from_millis(1)))
                    .min(give_up - now)
                    .min(WAITER_LEASE / 3);
                tokio::select! {
                    () = registration.notified() => backoff = FIRST_BACKOFF,
                    () = tokio::time::sleep(nap) => backoff = (backoff * 2).min(MAX_BACKOFF),
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn acquire(
        &self,
        request: Request<pb::LockAcquireRequest>,
    ) -> Result<Response<pb::LockAcquireResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let wanted = Wanted::new(self.context.limits(), &call.namespace, &request)?;
        let granted = acquire(&self.context, &call, &wanted).await?;
        let hash_tag = wanted.hash_tag();
        Ok(Response::new(match granted {
            Some(granted) => pb::LockAcquireResponse {
                acquired: true,
                token: granted.token,
                fencing_token: granted.fencing_token,
                expires_at: Some(timestamp(granted.expires_ms)),
                hash_tag,
            },
            None => pb::LockAcquireResponse {
                hash_tag,
                ..Default::default()
            },
        }))
    }

    async fn release(
        &self,
        request: Request<pb::LockReleaseRequest>,
    ) -> Result<Response<pb::LockReleaseResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        self.context.limits().name("name", &request.name)?;
        token("token", &request.token)?;
        let keys = call.namespace.lock_keys(&request.name);
        let released = self
            .context
            .redis
            .lock_release(&call, &keys, &request.token)
            .await?;
        Ok(Response::new(pb::LockReleaseResponse { released }))
    }

    async fn extend(
        &self,
        request: Request<pb::LockExtendRequest>,
    ) -> Result<Response<pb::LockExtendResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let limits = self.context.limits();
        limits.name("name", &request.name)?;
        token("token", &request.token)?;
        let ttl_ms = limits.required_ttl("ttl", request.ttl.as_ref())?;
        let keys = call.namespace.lock_keys(&request.name);
        let expires = self
            .context
            .redis
            .lock_extend(&call, &keys, &request.token, ttl_ms)
            .await?;
        Ok(Response::new(pb::LockExtendResponse {
            extended: expires.is_some(),
            expires_at: expires.map(timestamp),
        }))
    }

    type HoldStream = ResponseStream<pb::LockHoldResponse>;

    async fn hold(
        &self,
        request: Request<pb::LockHoldRequest>,
    ) -> Result<Response<Self::HoldStream>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        let wanted = Wanted::new(self.context.limits(), &call.namespace, &request)?;
        let context = self.context.clone();
        Ok(Response::new(self.context.stream_managed(move |sink| {
            hold(context, call, wanted, sink)
        })))
    }

    async fn inspect(
        &self,
        request: Request<pb::LockInspectRequest>,
    ) -> Result<Response<pb::LockInspectResponse>, Status> {
        let call = self.context.call(&request);
        let request = request.into_inner();
        self.context.limits().name("name", &request.name)?;
        let keys = call.namespace.lock_keys(&request.name);
        let status = self.context.redis.lock_inspect(&call, &keys).await?;
        Ok(Response::new(pb::LockInspectResponse {
            held: status.held,
            owner: status.owner,
            fencing_token: status.fencing_token,
            ttl: status.lease_left.map(duration),
            waiters: status.waiters,
            delay_remaining: status.delay_left.map(duration),
        }))
    }
}

/// A Hold stream event.
fn event(event: Event) -> pb::LockHoldResponse {
    pb::LockHoldResponse { event: Some(event) }
}

/// The last event of a Hold stream.
fn lost(reason: &str) -> Option<pb::LockHoldResponse> {
    Some(event(Event::Lost(Lost {
        reason: reason.into(),
    })))
}

/// Lock.Hold's producer: acquire, then renew about every ttl/3 until the client goes, the
/// server drains (both release the lock) or a renewal finds the lease gone.
async fn hold(
    context: Context,
    call: Call,
    wanted: Wanted,
    sink: Sink<pb::LockHoldResponse>,
) -> Result<Option<pb::LockHoldResponse>, Error> {
    let shutdown = context.shared.shutdown.clone();
    let granted = tokio::select! {
        granted = acquire(&context, &call, &wanted) => granted?,
        () = sink.closed() => return Ok(None),
        () = shutdown.cancelled() => return Ok(lost("the server is draining; the lock was not taken")),
    };
    let Some(granted) = granted else {
        return Ok(lost("the lock stayed busy past wait_timeout"));
    };
    // Renewals have their own budget, not the stream call's deadline.
    let renewal_call = |lease_end: Instant| {
        let left = lease_end.saturating_duration_since(Instant::now());
        Call::new(
            Some(left.max(Duration::from_millis(1))),
            context.redis.command_timeout(),
            call.namespace.clone(),
        )
    };
    let release = |reason: &'static str| {
        let context = context.clone();
        let keys = wanted.keys.clone();
        let namespace = call.namespace.clone();
        let token = granted.token.clone();
        async move {
            let call = Call::new(None, context.redis.command_timeout(), namespace);
            if let Err(err) = context.redis.lock_release(&call, &keys, &token).await {
                tracing::debug!(error = %err, reason, "releasing a held lock failed; its lease ends it");
            }
        }
    };
    let ttl = Duration::from_millis(wanted.ttl_ms);
    let every = (ttl / 3).max(Duration::from_millis(1));
    let mut lease_end = granted.sent_at + ttl;
    let mut next_renewal = granted.sent_at + every;
    let acquired = event(Event::Acquired(Acquired {
        token: granted.token.clone(),
        fencing_token: granted.fencing_token,
        expires_at: Some(timestamp(granted.expires_ms)),
        hash_tag: wanted.hash_tag(),
    }));
    if !sink.send(acquired).await {
        release("the client went away").await;
        return Ok(None);
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_renewal) => {}
            () = sink.closed() => {
                release("the client went away").await;
                return Ok(None);
            }
            () = shutdown.cancelled() => {
                release("the server is draining").await;
                return Ok(lost("the server is draining; the lock was released"));
            }
        }
        let sent_at = Instant::now();
        match context
            .redis
            .lock_extend(
                &renewal_call(lease_end),
                &wanted.keys,
                &granted.token,
                wanted.ttl_ms,
            )
            .await
        {
            Ok(Some(expires_ms)) => {
                lease_end = sent_at + ttl;
                next_renewal = sent_at + every;
                let renewed = event(Event::Renewed(Renewed {
                    expires_at: Some(timestamp(expires_ms)),
                }));
                if !sink.offer(renewed) {
                    release("the client went away").await;
                    return Ok(None);
                }
            }
            Ok(None) => {
                return Ok(lost("a renewal found the lease expired or the lock taken"));
            }
            Err(err) => {
                if Instant::now() + Duration::from_millis(1) >= lease_end {
                    tracing::info!(error = %err, "a held lock's lease ran out while Redis was unreachable");
                    return Ok(lost("Redis was unreachable until the lease ran out"));
                }
                tracing::debug!(error = %err, "renewing a held lock failed; retrying");
                next_renewal =
                    Instant::now() + (every / 4).clamp(Duration::from_millis(1), FIRST_BACKOFF * 2);
            }
        }
    }
}
