//! The gRPC port's connections, from accept to close: TCP options, the TLS handshake (with
//! certificates reloaded in place, see [`tls`]), HTTP/2, and every way the server ends a
//! connection. Each runtime runs its own accept loop on its seat of the listening address
//! (SO_REUSEPORT) and serves its connections on its own thread.
//!
//! The server ends a connection gracefully — GOAWAY, calls already started finish, a client
//! connects again for its next call and no call is lost — when:
//! - the gateway drains (SIGTERM),
//! - it reached GATEWAY_MAX_CONNECTION_AGE,
//! - it has had no call open for GATEWAY_IDLE_TIMEOUT. A call counts as open from its
//!   request until its response ends, so an open stream (a watch, a lock's Hold) keeps its
//!   connection; pings do not count, so a client that only pings is idle.
//!
//! A client that does not finish its TLS handshake within 10 s is disconnected, and one that
//! stops answering the server's pings (GATEWAY_HTTP2_KEEPALIVE_INTERVAL / _TIMEOUT) too.
//!
//! Each call's request carries its [`Connection`] in its extensions: the client certificate
//! for mTLS clients and the open-call count the idle timeout reads. The call's grpc-timeout
//! is a backstop deadline ([`DeadlineLayer`]) for handlers that would answer later.

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

use self::tls::ServerTls;

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on accepted connections, to find peers that vanished without a FIN.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// The pause after an accept error such as running out of file descriptors, so that the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The services a connection serves (the gateway's whole stack of layers and routes), cloned
/// for each connection: what hyper needs of them, in one place.
pub trait GrpcService:
    Service<
        Request<tonic::body::Body>,
        Response = Response<Self::ResponseBody>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The body of its responses.
    type ResponseBody: http_body::Body<Data = bytes::Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
}

impl<S, B> GrpcService for S
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type ResponseBody = B;
}

/// How the gRPC port treats its connections.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Most concurrent calls (HTTP/2 streams) on one connection.
    pub max_concurrent_streams: u32,
    /// The interval of the server's HTTP/2 pings.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// The longest a connection lives before GOAWAY.
    pub max_age: Option<Duration>,
    /// How long a connection may have no call open before GOAWAY.
    pub idle_timeout: Option<Duration>,
}

/// Why a connection ended, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client closed it (or it failed: a reset, unanswered pings).
    Client,
    /// The server closed it after GATEWAY_IDLE_TIMEOUT without calls.
    Idle,
    /// The server closed it at GATEWAY_MAX_CONNECTION_AGE.
    MaxAge,
    /// The server closed it while draining.
    Drain,
    /// Its TLS handshake failed or did not finish in time.
    TlsHandshake,
}

impl Closed {
    /// Every reason, in the order of [`ConnectionStats`]' counters.
    pub const ALL: [Closed; 5] = [
        Closed::Client,
        Closed::Idle,
        Closed::MaxAge,
        Closed::Drain,
        Closed::TlsHandshake,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::Idle => "idle",
            Closed::MaxAge => "max_age",
            Closed::Drain => "drain",
            Closed::TlsHandshake => "tls_handshake",
        }
    }
}

/// The gRPC port's connection counters, process-wide.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    closed: [AtomicU64; 5],
}

impl ConnectionStats {
    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections that ended for `why` since start.
    pub fn closed(&self, why: Closed) -> u64 {
        self.closed[why as usize].load(Ordering::Relaxed)
    }

    /// Connections open now (TLS handshakes included).
    pub fn open(&self) -> u64 {
        let closed: u64 = Closed::ALL.iter().map(|why| self.closed(*why)).sum();
        self.accepted().saturating_sub(closed)
    }

    fn close(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// One client connection, as its calls see it (in their request extensions).
#[derive(Debug)]
pub struct Connection {
    /// The client's address.
    peer: SocketAddr,
    /// The client certificate that mTLS verified (DER, the leaf).
    client_certificate: Option<Vec<u8>>,
    /// Calls open on it now.
    open_calls: AtomicU32,
    /// When it last had no call open: milliseconds since `opened`.
    quiet_since_ms: AtomicU64,
    /// When it was accepted.
    opened: Instant,
}

impl Connection {
    fn new(peer: SocketAddr, client_certificate: Option<Vec<u8>>) -> Self {
        Self {
            peer,
            client_certificate,
            open_calls: AtomicU32::new(0),
            quiet_since_ms: AtomicU64::new(0),
            opened: Instant::now(),
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client certificate mTLS verified (DER), if the client presented one.
    pub fn client_certificate(&self) -> Option<&[u8]> {
        self.client_certificate.as_deref()
    }

    /// A call started on this connection.
    pub fn call_started(&self) {
        self.open_calls.fetch_add(1, Ordering::AcqRel);
    }

    /// A call on this connection ended (its response finished or was dropped).
    pub fn call_ended(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        // Stamped before the count drops, so whoever sees no call open sees this time.
        self.quiet_since_ms.fetch_max(now, Ordering::AcqRel);
        self.open_calls.fetch_sub(1, Ordering::AcqRel);
    }

    /// Since when the connection has had no call open, or `None` while one is.
    fn quiet_since(&self) -> Option<Instant> {
        if self.open_calls.load(Ordering::Acquire) > 0 {
            return None;
        }
        let millis = self.quiet_since_ms.load(Ordering::Acquire);
        Some(self.opened + Duration::from_millis(millis))
    }

    /// Returns once the connection has had no call open for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let check_at = match self.quiet_since() {
                Some(since) if since.elapsed() >= timeout => return,
                Some(since) => since + timeout,
                None => Instant::now() + timeout,
            };
            tokio::time::sleep_until(check_at.into()).await;
        }
    }
}

/// Serves `service` on the connections `listener` accepts until `stop_accepting` completes,
/// then closes the listening socket, asks every connection to finish (GOAWAY) and returns
/// once all have closed.
pub async fn serve<S: GrpcService>(
    listener: TcpListener,
    service: S,
    tls: Option<Arc<ServerTls>>,
    settings: &ConnectionSettings,
    stats: Arc<ConnectionStats>,
    stop_accepting: impl Future<Output = ()>,
) {
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout)
        // gRPC has no use for a Date header on every response.
        .auto_date_header(false);
    let drain = CancellationToken::new();
    let connections = TaskTracker::new();
    {
        let mut stop_accepting = pin!(stop_accepting);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut stop_accepting => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            configure(&stream);
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let opened = Opened {
                stats: stats.clone(),
                stream,
                peer,
                service: service.clone(),
                http2: http2.clone(),
                settings: settings.clone(),
                drain: drain.clone(),
            };
            match &tls {
                Some(tls) => connections.spawn(opened.handshake(tls.acceptor())),
                None => connections.spawn(opened.serve_plain()),
            };
        }
    }
    // New clients are refused from here on, rather than left waiting in the backlog.
    drop(listener);
    drain.cancel();
    connections.close();
    connections.wait().await;
}

/// TCP options on an accepted connection: no Nagle delay (each response goes out when
/// written; the HTTP/2 layer already coalesces what is ready together) and TCP keepalive.
fn configure(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "TCP_NODELAY not set");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(err) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %err, "TCP keepalive not set");
    }
}

/// An accepted connection before HTTP/2.
struct Opened<S> {
    stats: Arc<ConnectionStats>,
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    settings: ConnectionSettings,
    drain: CancellationToken,
}

impl<S: GrpcService> Opened<S> {
    /// Serves a plaintext connection.
    async fn serve_plain(self) {
        let connection = Arc::new(Connection::new(self.peer, None));
        let Self {
            stats,
            stream,
            service,
            http2,
            settings,
            drain,
            ..
        } = self;
        let why = serve_connection(stream, connection, service, http2, settings, drain).await;
        stats.close(why);
    }

    /// Completes the TLS handshake (within [`TLS_HANDSHAKE_TIMEOUT`]), then serves.
    async fn handshake(self, acceptor: tokio_rustls::TlsAcceptor) {
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(self.stream));
        let stream = tokio::select! {
            () = self.drain.cancelled() => {
                self.stats.close(Closed::Drain);
                return;
            }
            done = handshake => match done {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(peer = %self.peer, error = %err, "TLS handshake failed");
                    self.stats.close(Closed::TlsHandshake);
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "TLS handshake not finished in time");
                    self.stats.close(Closed::TlsHandshake);
                    return;
                }
            },
        };
        let client_certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.as_ref().to_vec());
        let connection = Arc::new(Connection::new(self.peer, client_certificate));
        let why = serve_connection(
            stream,
            connection,
            self.service,
            self.http2,
            self.settings,
            self.drain,
        )
        .await;
        self.stats.close(why);
    }
}

/// Serves HTTP/2 on `io` until the client closes it, or until the server ends it gracefully:
/// on `drain`, at the maximum age, or after the idle timeout. Returns why it ended.
async fn serve_connection<IO, S>(
    io: IO,
    connection: Arc<Connection>,
    service: S,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    settings: ConnectionSettings,
    drain: CancellationToken,
) -> Closed
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: GrpcService,
{
    let service = TowerToHyperService::new(ConnectionService {
        inner: service,
        connection: connection.clone(),
    });
    let mut served = pin!(http2.serve_connection(TokioIo::new(io), service));
    let aged = optional_sleep(settings.max_age);
    let mut aged = pin!(aged);
    let idle = async {
        match settings.idle_timeout {
            Some(timeout) => connection.idle(timeout).await,
            None => std::future::pending().await,
        }
    };
    let mut idle = pin!(idle);
    let mut closing = None;
    loop {
        let why = tokio::select! {
            outcome = &mut served => {
                if let Err(err) = outcome {
                    tracing::debug!(peer = %connection.peer, error = %err, "connection ended");
                }
                return closing.unwrap_or(Closed::Client);
            }
            () = drain.cancelled(), if closing.is_none() => Closed::Drain,
            () = &mut aged, if closing.is_none() => Closed::MaxAge,
            () = &mut idle, if closing.is_none() => Closed::Idle,
        };
        tracing::debug!(peer = %connection.peer, why = why.label(), "closing the connection (GOAWAY)");
        served.as_mut().graceful_shutdown();
        closing = Some(why);
    }
}

/// Sleeps for `duration`, or forever when there is none.
async fn optional_sleep(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// A connection's view of the services: each request gets the [`Connection`] in its
/// extensions and (at debug level) a span naming its method.
#[derive(Clone)]
struct ConnectionService<S> {
    inner: S,
    connection: Arc<Connection>,
}

impl<S, B> Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let mut request = request.map(tonic::body::Body::new);
        request.extensions_mut().insert(self.connection.clone());
        // A span per call, at debug level: free when the log level is info.
        let span = tracing::debug_span!("rpc", method = %request.uri().path());
        self.inner.call(request).instrument(span)
    }
}

/// Answers DEADLINE_EXCEEDED when a call's grpc-timeout passes before its handler answered
/// (the handler is dropped then): a backstop, since handlers bound their Redis work by the
/// same deadline and usually answer first.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, RequestBody> Service<Request<RequestBody>> for Deadline<S>
where
    S: Service<Request<RequestBody>, Response = Response<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(crate::redis::call::parse_grpc_timeout);
        DeadlineFuture {
            inner: self.inner.call(request),
            // A deadline too far to represent is no deadline.
            expiry: timeout
                .and_then(|timeout| tokio::time::Instant::now().checked_add(timeout))
                .map(tokio::time::sleep_until),
        }
    }
}

pin_project! {
    /// A handler's answer, or DEADLINE_EXCEEDED when its deadline passes first.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        expiry: Option<tokio::time::Sleep>,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(outcome) = this.inner.poll(cx) {
            return Poll::Ready(outcome);
        }
        if let Some(expiry) = this.expiry.as_pin_mut() {
            ready!(expiry.poll(cx));
            return Poll::Ready(Ok(tonic::Status::deadline_exceeded(
                "the call's deadline (grpc-timeout) passed before the gateway answered",
            )
            .into_http()));
        }
        Poll::Pending
    }
}
