//! The one tower layer on every runtime's gRPC server: it counts the calls in flight (for
//! Monitor's [`Stats::in_flight_calls`], and per connection for its idle timeout) and, when metrics are on, counts and times each call
//! by method and status code (into the runtime's [`CallTable`]).
//!
//! A call counts as in flight from the moment the server hands its request to the services
//! until its response body has been sent or dropped, so a server stream counts for as long as
//! it is open, and a call whose client went away stops counting when hyper drops its response.
//! The guard that ends the call travels with the response future and then with the response
//! body, so no path forgets it; one wrapper does both jobs.
//!
//! Where the status code comes from: tonic sends an error returned by a handler as a
//! trailers-only response, with `grpc-status` in the response headers and an empty body; every
//! other call (unary success, and every server stream) ends with `grpc-status` in the
//! trailers. So the layer reads the headers of a response whose body is empty, and otherwise
//! the trailers frame of the body. A call whose response body is dropped before its status was
//! sent (the client cancelled or went away) counts as CANCELLED; a call whose grpc-timeout
//! passed first is answered DEADLINE_EXCEEDED by [`crate::transport::DeadlineLayer`] (inside
//! this layer, so counted as such); a body that ends or fails without a status counts as
//! UNKNOWN.
//!
//! The cost per call: every counter it touches belongs to its runtime (an atomic increment and
//! decrement of the in-flight count, one reference count), and with metrics on a hash of its
//! path, two clock reads and three atomic additions; no lock, and nothing shared between
//! cores. Measured in the README's "Metrics" section.
//!
//! [`Stats::in_flight_calls`]: super::Stats::in_flight_calls

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, HeaderName, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::CallTable;
use crate::transport::Connection;

/// The header or trailer that carries a call's status code.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// One runtime's call counters. Aligned to two cache lines so that two runtimes' counters
/// never share one.
#[repr(align(128))]
pub struct RuntimeCalls {
    /// Calls being served now on this runtime.
    in_flight: AtomicU64,
    /// Where this runtime's calls are measured, when metrics are on.
    measured: Option<Arc<CallTable>>,
}

impl RuntimeCalls {
    /// Counters for one runtime; `measured` when metrics are on.
    pub fn new(measured: Option<Arc<CallTable>>) -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            measured,
        }
    }

    /// Calls being served now on this runtime.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for RuntimeCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeCalls")
            .field("in_flight", &self.in_flight())
            .field("measured", &self.measured.is_some())
            .finish()
    }
}

/// Counts (and measures) every call of the services it wraps.
#[derive(Clone)]
pub struct CallLayer {
    calls: Arc<RuntimeCalls>,
}

impl CallLayer {
    /// A layer counting into `calls`, which belong to the runtime serving with it.
    pub fn new(calls: Arc<RuntimeCalls>) -> Self {
        Self { calls }
    }
}

impl<S> Layer<S> for CallLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls {
            inner,
            calls: self.calls.clone(),
        }
    }
}

/// The service [`CallLayer`] makes.
#[derive(Clone)]
pub struct Calls<S> {
    inner: S,
    calls: Arc<RuntimeCalls>,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for Calls<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    ResponseBody: Body,
{
    type Response = Response<CallBody<ResponseBody>>;
    type Error = S::Error;
    type Future = CallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let connection = request.extensions().get::<Arc<Connection>>().cloned();
        let call = Call::start(&self.calls, request.uri().path(), connection);
        CallFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

/// A call being served: counted in flight until dropped, and when measured, recorded once
/// with its status (CANCELLED if dropped before one was seen).
struct Call {
    calls: Arc<RuntimeCalls>,
    /// The connection it came on, whose idle timeout waits for it.
    connection: Option<Arc<Connection>>,
    /// The method number and start, while measured and not recorded yet.
    measuring: Option<(usize, Instant)>,
}

impl Call {
    fn start(calls: &Arc<RuntimeCalls>, path: &str, connection: Option<Arc<Connection>>) -> Self {
        calls.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(connection) = &connection {
            connection.call_started();
        }
        let measuring = calls
            .measured
            .as_ref()
            .map(|table| (table.method(path), Instant::now()));
        Self {
            calls: calls.clone(),
            connection,
            measuring,
        }
    }

    /// Whether the call still waits for its status.
    fn measuring(&self) -> bool {
        self.measuring.is_some()
    }

    /// Records the status `code` (once; later codes are ignored).
    fn finish(&mut self, code: Code) {
        if let (Some((method, started)), Some(table)) =
            (self.measuring.take(), self.calls.measured.as_ref())
        {
            table.record(method, code, started.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
        self.calls.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(connection) = &self.connection {
            connection.call_ended();
        }
    }
}

/// The status code in `headers`, if they carry one.
fn status_in(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(GRPC_STATUS)
        .map(|value| Code::from_bytes(value.as_bytes()))
}

pin_project! {
    /// The response future: a trailers-only response (an error status) is recorded at once,
    /// any other passes its call on to the body. A response is trailers-only exactly when its
    /// body is empty (tonic answers an error so), so the headers are only searched then.
    pub struct CallFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, ResponseBody: Body, E> Future for CallFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
{
    type Output = Result<Response<CallBody<ResponseBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match outcome {
            Ok(response) => {
                if let Some(call) = call.as_mut().filter(|call| call.measuring())
                    && response.body().is_end_stream()
                {
                    call.finish(status_in(response.headers()).unwrap_or(Code::Unknown));
                }
                Ok(response.map(|inner| CallBody { inner, call }))
            }
            Err(err) => {
                if let Some(call) = call.as_mut() {
                    call.finish(Code::Unknown);
                }
                Err(err)
            }
        })
    }
}

pin_project! {
    /// The response body: keeps its call in flight until finished or dropped, and records
    /// the status when the trailers carry it.
    pub struct CallBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for CallBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(call) = this.call.as_mut().filter(|call| call.measuring()) {
            let code = match &frame {
                Some(Ok(frame)) => frame.trailers_ref().map(|trailers| {
                    // One or two entries (grpc-status, grpc-message): a scan costs less than
                    // hashing the name.
                    trailers
                        .iter()
                        .find(|(name, _)| *name == GRPC_STATUS)
                        .map_or(Code::Unknown, |(_, value)| {
                            Code::from_bytes(value.as_bytes())
                        })
                }),
                Some(Err(_)) | None => Some(Code::Unknown),
            };
            if let Some(code) = code {
                call.finish(code);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
