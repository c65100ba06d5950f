//! A tower layer that counts the gRPC calls being served ([`Stats::in_flight_calls`]).
//!
//! A call counts from the moment the server hands its request to the services until its
//! response body has been sent or dropped, so a server stream counts for as long as it is
//! open, and a call whose client went away stops counting when tonic drops its response.
//! The count is one atomic add and one subtract per call; the guard that subtracts travels
//! with the response future and then with the response body, so no path forgets it.
//!
//! [`Stats::in_flight_calls`]: super::Stats::in_flight_calls

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};

use super::Shared;

/// Counts every call of the services it wraps in the shared [`Stats`](super::Stats).
#[derive(Clone)]
pub struct InFlightLayer {
    shared: Arc<Shared>,
}

impl InFlightLayer {
    /// A layer counting into `shared`'s statistics.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<S> tower_layer::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`InFlightLayer`] makes.
#[derive(Clone)]
pub struct InFlight<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// One call counted as in flight until dropped.
struct Counted {
    shared: Arc<Shared>,
}

impl Counted {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.stats.in_flight_calls.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: shared.clone(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.shared
            .stats
            .in_flight_calls
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for InFlight<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
{
    type Response = Response<CountedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let counted = Counted::new(&self.shared);
        CountedFuture {
            inner: self.inner.call(request),
            counted: Some(counted),
        }
    }
}

pin_project! {
    /// The response future of a counted call; hands the count on to the response body.
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        counted: Option<Counted>,
    }
}

impl<F, ResponseBody, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, E>>,
{
    type Output = Result<Response<CountedBody<ResponseBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let counted = this.counted.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody {
            inner,
            _counted: counted,
        })))
    }
}

pin_project! {
    /// A response body that keeps its call counted until it is finished or dropped.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        _counted: Option<Counted>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
