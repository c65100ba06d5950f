//! Wiring: the embedded Redis (if asked for), the runtimes and their Redis pools, the gRPC
//! services, health and reflection, the background Redis probe, and graceful shutdown.
//!
//! Runtime model (see the crate docs for the measurements behind it): `GATEWAY_RUNTIMES`
//! single-threaded tokio runtimes, one per two CPU cores by default. [`run`] serves on the runtime
//! it is called on; each further runtime runs on its own thread with its own listener on the
//! same address (SO_REUSEPORT, so the kernel spreads connections) and its own Redis pool. They
//! share only [`Shared`] (limits, shutdown, tasks, counters) and the health status.
//!
//! Shutdown: when `shutdown` is cancelled, health turns NOT_SERVING, the listeners close (new
//! calls are refused), streams and background tasks end themselves, and in-flight calls and
//! tasks are drained for at most `--drain-timeout`; then the pools close and the embedded
//! Redis stops.
//!
//! Metrics (when `--metrics-listen` is set): one registry for the process; each runtime's gRPC
//! server counts and measures its calls with [`crate::service::calls`] into its own table of
//! [`crate::metrics::calls`], and the first runtime serves the
//! endpoint as a tracked task.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::types::config::Config as FredConfig;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::server::HealthReporter;
use tower_layer::Layer;

use crate::auth::Auth;
use crate::config::{Config, RedisMode, redact_url};
use crate::error::Error;
use crate::metrics::{self, Metrics};
use crate::pb;
use crate::pb::hash_server::HashServer;
use crate::pb::key_value_server::KeyValueServer;
use crate::pb::lock_server::LockServer;
use crate::pb::monitor_server::MonitorServer;
use crate::pb::session_server::SessionServer;
use crate::redis::embedded::{EmbeddedError, EmbeddedRedis};
use crate::redis::server_info::{MIN_VERSION, RedisVersion};
use crate::redis::{self, Redis};
use crate::service::admission::AdmissionLayer;
use crate::service::calls::CallLayer;
use crate::service::hash::HashService;
use crate::service::kv::KeyValueService;
use crate::service::lock::LockService;
use crate::service::monitor::MonitorService;
use crate::service::session::SessionService;
use crate::service::{Context, Shared};
use crate::transport::tls::{ServerTls, TlsFiles};
use crate::transport::{self, ConnectionSettings, DeadlineLayer};

/// Room for message framing on top of the response limit's value bytes (keys, lengths,
/// tags), so that tonic's encoding limit only catches what the value check cannot.
const RESPONSE_FRAMING_ALLOWANCE: usize = 1 << 20;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The embedded redis-server could not start.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The Redis client could not be set up.
    #[error("Redis setup failed: {0}")]
    Redis(#[from] Error),
    /// Redis is older than the gateway supports.
    #[error(
        "Redis {found} is too old: the gateway needs Redis {MIN_VERSION} or later (it uses SET \
         with NX and GET together, PEXPIRE NX/XX/GT/LT and GETEX-like scripts)"
    )]
    UnsupportedRedis {
        /// The version the server reported.
        found: RedisVersion,
    },
    /// Reflection could not read the descriptor set.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// A runtime, its thread or its listener could not be set up.
    #[error("runtime setup failed: {0}")]
    Runtime(#[from] io::Error),
    /// The gRPC port's TLS files are unreadable.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The auth file is unreadable or invalid.
    #[error("invalid setting --auth-file / GATEWAY_AUTH_FILE: {0}")]
    Auth(String),
}

impl ServeError {
    /// The process exit code: 2 when a prerequisite is missing (as for bad configuration),
    /// 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Embedded(EmbeddedError::NotInstalled { .. })
            | Self::UnsupportedRedis { .. }
            | Self::Auth(_)
            | Self::Tls(_) => 2,
            _ => 1,
        }
    }
}

/// The health name a liveness probe asks: SERVING while the process serves, whatever Redis
/// does (a restart would not bring Redis back, only drop every client); NOT_SERVING once it
/// drains.
pub const LIVENESS: &str = "liveness";

/// The gRPC services this build registers; health reports each of them.
const SERVICES: &[&str] = &[
    KeyValueServer::<KeyValueService>::NAME,
    HashServer::<HashService>::NAME,
    SessionServer::<SessionService>::NAME,
    LockServer::<LockService>::NAME,
    MonitorServer::<MonitorService>::NAME,
];

/// A TCP socket for `addr`'s address family, not bound yet.
fn tcp_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
}

/// Binds a listener on `addr` that further runtimes can join (SO_REUSEPORT).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Fails when something already listens on `addr`. SO_REUSEPORT, which lets this gateway's
/// runtimes share the address, would otherwise also let a second gateway started by mistake on
/// the same address silently take part of the connections. A socket without SO_REUSEPORT
/// cannot bind beside a listening one (SO_REUSEADDR only passes over connections lingering in
/// TIME_WAIT, so a restart is not refused).
fn ensure_no_listener(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = tcp_socket(addr)?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|err| {
        if err.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "address already in use (another process listens there: a second gateway?)",
            )
        } else {
            err
        }
    })
}

/// The sockets the gateway serves on, bound before it runs: [`Listeners::bind`] binds the
/// configured addresses; with port 0 the kernel picks a free port, which `local_addr` tells
/// (the tests bind so).
pub struct Listeners {
    /// gRPC (GATEWAY_LISTEN); further runtimes join its address (SO_REUSEPORT).
    pub grpc: TcpListener,
    /// The Prometheus endpoint (GATEWAY_METRICS_LISTEN), when configured.
    pub metrics: Option<TcpListener>,
}

/// An address the gateway could not listen on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({setting}): {source}")]
pub struct ListenError {
    /// The setting that names the address, e.g. `--listen / GATEWAY_LISTEN`.
    pub setting: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// Why binding failed (address in use, not an address of this host, permission).
    #[source]
    pub source: io::Error,
}

impl Listeners {
    /// Binds GATEWAY_LISTEN, and GATEWAY_METRICS_LISTEN when set. Must run on a tokio runtime.
    pub fn bind(config: &Config) -> Result<Self, ListenError> {
        let grpc = ensure_no_listener(config.listen)
            .and_then(|()| bind(config.listen))
            .and_then(TcpListener::from_std)
            .map_err(|source| ListenError {
                setting: "--listen / GATEWAY_LISTEN",
                addr: config.listen,
                source,
            })?;
        let metrics = config
            .metrics_listen
            .map(|addr| {
                std::net::TcpListener::bind(addr)
                    .and_then(|listener| {
                        listener.set_nonblocking(true)?;
                        TcpListener::from_std(listener)
                    })
                    .map_err(|source| ListenError {
                        setting: "--metrics-listen / GATEWAY_METRICS_LISTEN",
                        addr,
                        source,
                    })
            })
            .transpose()?;
        Ok(Self { grpc, metrics })
    }
}

/// How a further runtime joins the first one's listening address.
struct ListenerSeat {
    /// The address to bind with SO_REUSEPORT (the kernel then spreads connections).
    addr: SocketAddr,
    /// A second handle on the first listener's socket, for when it lacks SO_REUSEPORT.
    fallback: std::net::TcpListener,
}

impl ListenerSeat {
    fn new(listener: &TcpListener) -> io::Result<Self> {
        Ok(Self {
            addr: listener.local_addr()?,
            fallback: socket2::SockRef::from(listener).try_clone()?.into(),
        })
    }

    /// The runtime's own listener (the fallback handle is closed when not used, so it never
    /// keeps the address open after the first listener closes).
    fn take(self) -> io::Result<std::net::TcpListener> {
        match bind(self.addr) {
            Ok(own) => Ok(own),
            Err(err) => {
                tracing::debug!(addr = %self.addr, error = %err, "the listener has no SO_REUSEPORT; sharing its socket");
                Ok(self.fallback)
            }
        }
    }
}

/// Serves on `listeners` until `shutdown` is cancelled and the drain is over.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let auth = match &config.auth_file {
        Some(path) => {
            let auth =
                Auth::load(path, config.auth_open_services.clone()).map_err(ServeError::Auth)?;
            tracing::info!(clients = auth.clients().len(), path = %path.display(), "callers authenticate with bearer tokens");
            Some(Arc::new(auth))
        }
        None => {
            if !config.listen.ip().is_loopback() {
                tracing::warn!(
                    listen = %config.listen,
                    "serving WITHOUT authentication on a non-loopback address (GATEWAY_AUTH=none): \
                     anyone who reaches it can read and write every key"
                );
            }
            None
        }
    };
    // Bad TLS material stops the gateway here, before anything connects.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = ServerTls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.tls_client_ca.clone(),
            })
            .map_err(ServeError::Tls)?;
            tracing::info!(
                client_certificates = tls.verifies_clients(),
                "the gRPC port serves TLS"
            );
            Some(Arc::new(tls))
        }
        _ => None,
    };
    // SIGHUP reads the TLS files and the auth file again (they are also re-read when they
    // change); installed before anything listens, so that it never ends the process.
    let (reload, reloads) = tokio::sync::watch::channel(());
    reload_on_hangup(reload, shutdown.clone())?;
    let embedded = if config.embedded_redis {
        Some(EmbeddedRedis::start(&config.redis_server_bin, &config.embedded_redis_dir).await?)
    } else {
        None
    };
    let fred_config = redis::fred_config(&config, embedded.as_ref().map(EmbeddedRedis::target))?;
    let runtimes = config.runtime_count();
    let connections = config.connections_per_runtime();
    tracing::info!(
        redis = %describe_target(&config, embedded.as_ref()),
        runtimes,
        connections_per_runtime = connections,
        "connecting to Redis"
    );
    let outcome = serve_all(
        &config,
        listeners,
        &shutdown,
        fred_config,
        Secured { auth, tls, reloads },
    )
    .await;
    shutdown.cancel();
    if let Some(embedded) = embedded {
        embedded.stop().await;
    }
    tracing::info!("stopped");
    outcome
}

/// What secures the gRPC port: the auth file's clients, TLS, and the reload signal (SIGHUP)
/// both follow.
struct Secured {
    auth: Option<Arc<Auth>>,
    tls: Option<Arc<ServerTls>>,
    reloads: tokio::sync::watch::Receiver<()>,
}

/// Fires `reload` on every SIGHUP until `shutdown`.
fn reload_on_hangup(
    reload: tokio::sync::watch::Sender<()>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reading the TLS and auth files again");
                    reload.send_replace(());
                }
            }
        }
    });
    Ok(())
}

/// Starts the metrics endpoint and the further runtimes, connects this runtime's pool (all
/// connect at once), probes Redis, serves, and drains.
async fn serve_all(
    config: &Config,
    listeners: Listeners,
    shutdown: &CancellationToken,
    fred_config: FredConfig,
    secured: Secured,
) -> Result<(), ServeError> {
    let Secured { auth, tls, reloads } = secured;
    let Listeners {
        grpc: listener,
        metrics: metrics_listener,
    } = listeners;
    let addr = listener.local_addr()?;
    let mut shared = Shared::new(config, shutdown.clone());
    if let Some(auth) = &auth {
        shared
            .tasks
            .spawn(auth.clone().watch(reloads.clone(), shutdown.clone()));
    }
    if let Some(tls) = &tls {
        shared
            .tasks
            .spawn(tls.clone().watch(reloads, shutdown.clone()));
    }
    shared.auth = auth;
    shared.tls = tls;
    let shared = Arc::new(shared);
    // Served from the start: while Redis is unreachable is when the metrics matter most.
    let metrics = match metrics_listener {
        Some(metrics_listener) => {
            let metrics = Arc::new(Metrics::new(shared.clone()));
            tracing::info!(addr = %metrics_listener.local_addr()?, "serving metrics");
            shared.tasks.spawn(metrics::endpoint::serve(
                metrics_listener,
                metrics.clone(),
                shared.tasks.clone(),
                shutdown.clone(),
            ));
            Some(metrics)
        }
        None => None,
    };
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health { reporter };
    health.set_all(ServingStatus::NotServing).await;
    health.set_liveness(ServingStatus::Serving).await;

    let mut others = Vec::new();
    for index in 1..config.runtime_count() {
        let worker = Worker {
            config: config.clone(),
            shared: shared.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            health_service: health_service.clone(),
        };
        let seat = ListenerSeat::new(&listener)?;
        let fred_config = fred_config.clone();
        let (done, finished) = tokio::sync::oneshot::channel();
        let (seated, ready) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("gateway-runtime-{index}"))
            .spawn(move || {
                let _ = done.send(worker.run_on_own_runtime(seat, fred_config, seated));
            })?;
        others.push((ready, finished));
    }
    let connected = tokio::select! {
        redis = Redis::connect(
            config,
            fred_config.clone(),
            config.connections_per_runtime(),
            shared.redis_stats.clone(),
            shared.near_cache.clone(),
            shared.lock_sync.clone(),
        ) => redis,
        () = shutdown.cancelled() => Err(Error::ShuttingDown),
    };
    let redis = match connected {
        Ok(redis) => redis,
        Err(err) => {
            shutdown.cancel();
            join(others).await?;
            return match err {
                Error::ShuttingDown => Ok(()),
                err => Err(err.into()),
            };
        }
    };
    // The process's one pub/sub subscription, waking lock waiters on every runtime.
    shared.tasks.spawn(shared.lock_wakeups.clone().run(
        fred_config.clone(),
        config.redis_connect_timeout,
        shutdown.clone(),
    ));
    // Replica-confirmed locks: their connection and the primary's replica count.
    let lock_sync = shared.lock_sync.clone();
    let (sync_config, sync_timeout, sync_shutdown) = (
        fred_config.clone(),
        config.redis_connect_timeout,
        shutdown.clone(),
    );
    let sync_redis = redis.clone();
    shared.tasks.spawn(async move {
        lock_sync
            .run(sync_redis, sync_config, sync_timeout, sync_shutdown)
            .await
    });
    // The near cache's tracking connection (returns at once when the cache is off).
    shared.tasks.spawn(shared.near_cache.clone().run(
        fred_config.clone(),
        config.redis_connect_timeout,
        shutdown.clone(),
    ));
    // The key-event feed of WatchExpirations: writer election, recording, reading.
    shared.tasks.spawn(shared.expiry.clone().run(
        redis.clone(),
        fred_config.clone(),
        config.redis_connect_timeout,
        shutdown.clone(),
    ));
    // Session.WatchEnded: the endings sweeper (one elected across replicas) and the reader.
    shared.tasks.spawn(shared.session_endings.clone().run(
        redis.clone(),
        fred_config.clone(),
        config.redis_connect_timeout,
        shutdown.clone(),
    ));
    let probe = shared.tasks.spawn(probe_redis(
        redis.clone(),
        health.clone(),
        config.health_interval,
        shutdown.clone(),
    ));
    // Every runtime is connected and listening before the gateway says it serves; one that
    // failed to start reports why below.
    for (ready, _) in &mut others {
        let _ = ready.await;
    }
    tracing::info!(%addr, services = ?SERVICES, "serving gRPC");
    let first = Worker {
        config: config.clone(),
        shared: shared.clone(),
        metrics,
        health,
        health_service,
    };
    let mut outcome = first.serve(listener, redis.clone()).await;
    outcome = outcome.and(join(others).await);
    shutdown.cancel();
    if let Ok(Err(err)) = probe.await {
        outcome = Err(err);
    }
    redis.quit().await;
    tracing::debug!(
        streams_opened = shared.stats.streams_opened.load(Ordering::Relaxed),
        streams_open = shared.stats.open_streams.load(Ordering::Relaxed),
        "runtimes stopped"
    );
    outcome
}

/// A further runtime: whether it has taken its seat on the address, and how it ended.
type Started = (
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Receiver<Result<(), ServeError>>,
);

/// Waits until every further runtime has ended; the first failure wins.
async fn join(runtimes: Vec<Started>) -> Result<(), ServeError> {
    let mut outcome = Ok(());
    for (_, finished) in runtimes {
        let ended = finished.await.unwrap_or_else(|_| {
            Err(ServeError::Runtime(io::Error::other(
                "a runtime thread panicked",
            )))
        });
        outcome = outcome.and(ended);
    }
    outcome
}

/// One runtime's share of the server.
struct Worker<H> {
    /// The settings.
    config: Config,
    /// What the runtimes share.
    shared: Arc<Shared>,
    /// The registry calls are measured into, when the metrics endpoint is on.
    metrics: Option<Arc<Metrics>>,
    /// The health statuses, to turn NOT_SERVING on shutdown.
    health: Health,
    /// The health service; every runtime serves the same statuses.
    health_service: HealthServer<H>,
}

impl<H: HealthApi> Worker<H> {
    /// Builds a single-threaded runtime on this thread, connects its own pool, and only then
    /// takes its seat on the listening address (until then the other runtimes take every
    /// connection), and serves.
    fn run_on_own_runtime(
        self,
        seat: ListenerSeat,
        fred_config: FredConfig,
        seated: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let shutdown = self.shared.shutdown.clone();
            let connections = self.config.connections_per_runtime();
            let redis = tokio::select! {
                redis = Redis::connect(
                    &self.config,
                    fred_config,
                    connections,
                    self.shared.redis_stats.clone(),
                    self.shared.near_cache.clone(),
                    self.shared.lock_sync.clone(),
                ) => redis?,
                () = shutdown.cancelled() => return Ok(()),
            };
            let outcome = match seat.take().and_then(TcpListener::from_std) {
                Ok(listener) => {
                    let _ = seated.send(());
                    self.serve(listener, redis.clone()).await
                }
                Err(err) => Err(err.into()),
            };
            redis.quit().await;
            outcome
        })
    }

    /// Serves on `listener` with `redis` until shutdown and drain.
    async fn serve(self, listener: TcpListener, redis: Redis) -> Result<(), ServeError> {
        let shared = self.shared.clone();
        let shutdown = shared.shutdown.clone();
        let context = Context::new(redis, shared.clone());
        let (max_request, max_response) = (
            self.config.max_request_bytes,
            self.config.max_response_bytes + RESPONSE_FRAMING_ALLOWANCE,
        );
        let keyvalue = KeyValueServer::new(KeyValueService::new(context.clone()))
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(max_response);
        let hash = HashServer::new(HashService::new(context.clone()))
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(max_response);
        let session = SessionServer::new(SessionService::new(context.clone()))
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(max_response);
        let lock = LockServer::new(LockService::new(context.clone()))
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(max_response);
        let monitor = MonitorServer::new(MonitorService::new(context))
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(max_response);
        let routes = Routes::new(self.health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(keyvalue)
            .add_service(hash)
            .add_service(session)
            .add_service(lock)
            .add_service(monitor);
        let calls = shared
            .stats
            .add_runtime(self.metrics.as_ref().map(|metrics| metrics.add_runtime()));
        // Outermost first: counts calls in flight (per runtime and per connection) and
        // measures them when the metrics endpoint is on; the call's grpc-timeout as a
        // backstop (counted as DEADLINE_EXCEEDED); load shedding, tokens and permissions
        // before any handler (refusals counted too).
        let admission = AdmissionLayer::new(
            calls.clone(),
            self.config.in_flight_per_runtime(),
            shared.auth.clone(),
        );
        let service = CallLayer::new(calls).layer(DeadlineLayer.layer(admission.layer(routes)));
        let settings = ConnectionSettings {
            max_concurrent_streams: self.config.max_concurrent_streams,
            keepalive_interval: self.config.http2_keepalive_interval,
            keepalive_timeout: self.config.http2_keepalive_timeout,
            max_age: self.config.max_connection_age,
            idle_timeout: Some(self.config.idle_timeout).filter(|timeout| !timeout.is_zero()),
        };
        let health = self.health.clone();
        let stop_accepting = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                health.set_all(ServingStatus::NotServing).await;
                health.set_liveness(ServingStatus::NotServing).await;
                health.end_watches().await;
            }
        };
        let serve = transport::serve(
            listener,
            service,
            shared.tls.clone(),
            &settings,
            shared.stats.connections.clone(),
            stop_accepting,
        );
        tokio::pin!(serve);
        let drain_timeout = self.config.drain_timeout;
        let drained_by = tokio::select! {
            () = &mut serve => Instant::now() + drain_timeout,
            () = shutdown.cancelled() => {
                let drained_by = Instant::now() + drain_timeout;
                if tokio::time::timeout_at(drained_by, &mut serve).await.is_err() {
                    tracing::warn!(?drain_timeout, "calls still running after the drain timeout; stopping anyway");
                }
                drained_by
            }
        };
        let outcome = Ok(());
        // Also ends the other runtimes and the probe when this server failed on its own.
        shutdown.cancel();
        shared.tasks.close();
        if tokio::time::timeout_at(drained_by, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = shared.tasks.len(),
                "background tasks still running after the drain timeout; stopping anyway"
            );
        }
        outcome
    }
}

/// The health statuses: the overall one ("") and one per registered service.
#[derive(Clone)]
struct Health {
    reporter: HealthReporter,
}

impl Health {
    /// Ends every Health.Watch stream (after its watchers were sent NOT_SERVING), since a
    /// stream left open would hold the drain until its timeout.
    async fn end_watches(&self) {
        let mut reporter = self.reporter.clone();
        reporter.clear_service_status("").await;
        reporter.clear_service_status(LIVENESS).await;
        for service in SERVICES {
            reporter.clear_service_status(service).await;
        }
    }

    /// The process's own status, for liveness probes.
    async fn set_liveness(&self, status: ServingStatus) {
        self.reporter.set_service_status(LIVENESS, status).await;
    }

    /// The overall status and every service's: whether calls can be served (Redis).
    async fn set_all(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in SERVICES {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

/// Pings Redis every `interval` and reports SERVING / NOT_SERVING on each change, until
/// shutdown (when the status stays NOT_SERVING). Each time Redis becomes reachable its
/// version is checked: a server older than the gateway supports stops the gateway.
async fn probe_redis(
    redis: Redis,
    health: Health,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let timeout = interval
        .max(Duration::from_millis(500))
        .min(redis.command_timeout());
    let mut serving = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        // A cluster that reports itself down refuses every command: not serving.
        let mut reachable = match redis.cluster_serves(timeout).await {
            Ok(true) => redis.ping(timeout).await,
            Ok(false) => Err(Error::Unavailable {
                message: "the Redis Cluster reports cluster_state:fail".into(),
                outcome_unknown: false,
            }),
            Err(err) => Err(err),
        };
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if reachable.is_ok() && serving != Some(true) {
            match redis.server_version(timeout).await {
                Ok(found) if !found.is_supported() => {
                    let err = ServeError::UnsupportedRedis { found };
                    tracing::error!(error = %err, "refusing to serve");
                    shutdown.cancel();
                    return Err(err);
                }
                Ok(_) => {}
                Err(err) => reachable = Err(err),
            }
        }
        let now_serving = reachable.is_ok();
        if serving != Some(now_serving) {
            match &reachable {
                Ok(latency) => tracing::info!(?latency, "Redis is reachable: SERVING"),
                Err(err) => tracing::warn!(error = %err, "Redis is unreachable: NOT_SERVING"),
            }
            let status = if now_serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_all(status).await;
            serving = Some(now_serving);
        }
    }
}

/// A reflection builder advertising exactly the services this server runs.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection");
    for service in SERVICES {
        builder = builder.with_service_name(*service);
    }
    builder
}

/// Where the gateway connects, for the log; never shows a password.
fn describe_target(config: &Config, embedded: Option<&EmbeddedRedis>) -> String {
    match (embedded, &config.redis_url) {
        (Some(embedded), _) => format!(
            "embedded redis-server at {}",
            embedded.target().socket().display()
        ),
        (None, Some(url)) => redact_url(url),
        (None, None) => {
            let nodes = if config.redis_nodes.is_empty() {
                format!("{}:{}", config.redis_host, config.redis_port)
            } else {
                config.redis_nodes.join(",")
            };
            let mode = config.redis_mode.unwrap_or(RedisMode::Standalone);
            let tls = if config.redis_tls { " over TLS" } else { "" };
            match (mode, &config.redis_sentinel_service) {
                (RedisMode::Sentinel, Some(service)) => format!(
                    "{service} via sentinels {nodes} db {}{tls}",
                    config.redis_db
                ),
                (RedisMode::Cluster, _) => format!("cluster {nodes}{tls}"),
                _ => format!("{nodes} db {}{tls}", config.redis_db),
            }
        }
    }
}
