//! The tower layer in front of every handler that decides whether a call is admitted at all:
//! load shedding first, then authentication and authorization ([`crate::auth`]).
//!
//! - **Shedding.** Each runtime serves at most its share of GATEWAY_MAX_IN_FLIGHT calls at
//!   once (streams included, counted by [`super::calls`]); a call beyond it is answered
//!   RESOURCE_EXHAUSTED at once, before anything is decoded or queued, so overload costs a
//!   refusal instead of a queue that grows. Health checks are never shed (an orchestrator
//!   must not restart a busy gateway).
//! - **Auth.** With an auth file, the request's token and the method's permission are
//!   checked; the caller ([`crate::auth::Principal`]) goes to the handler in the request's
//!   extensions.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use super::calls::RuntimeCalls;
use crate::auth::Auth;
use crate::transport::Connection;

/// The path prefix of the health service, which is never shed.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

/// Admission for one runtime: its call counters and share of the in-flight limit, and the
/// process's auth file when callers authenticate.
#[derive(Clone)]
pub struct AdmissionLayer {
    calls: Arc<RuntimeCalls>,
    max_in_flight: u64,
    auth: Option<Arc<Auth>>,
}

impl AdmissionLayer {
    /// Sheds calls beyond `max_in_flight` on this runtime (counted in `calls`), then checks
    /// `auth` when given.
    pub fn new(calls: Arc<RuntimeCalls>, max_in_flight: u64, auth: Option<Arc<Auth>>) -> Self {
        Self {
            calls,
            max_in_flight,
            auth,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] makes.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S, RequestBody> Service<Request<RequestBody>> for Admission<S>
where
    S: Service<Request<RequestBody>, Response = Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        let refuse = |status: Status| Either::Left(ready(Ok(status.into_http())));
        let path = request.uri().path();
        // This call is already counted.
        if self.layer.calls.in_flight() > self.layer.max_in_flight && !path.starts_with(HEALTH_PATH)
        {
            return refuse(Status::resource_exhausted(format!(
                "the gateway is serving its limit of calls at once (GATEWAY_MAX_IN_FLIGHT); \
                 retry with backoff ({path})"
            )));
        }
        if let Some(auth) = &self.layer.auth {
            let authorization = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            // A client certificate mTLS verified (the leaf).
            let leaf = request
                .extensions()
                .get::<Arc<Connection>>()
                .and_then(|connection| connection.client_certificate());
            match auth.check(path, authorization, leaf) {
                Ok(Some(principal)) => {
                    request.extensions_mut().insert(principal);
                }
                Ok(None) => {}
                Err(status) => return refuse(status),
            }
        }
        Either::Right(self.inner.call(request))
    }
}
