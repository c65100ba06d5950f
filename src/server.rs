//! Wiring: the embedded Redis (if asked for), the Redis pool, the gRPC services, health and
//! reflection, the background Redis probe, and graceful shutdown.
//!
//! Shutdown: when `shutdown` is cancelled, health turns NOT_SERVING, the listener closes (new
//! calls are refused), streams end themselves, in-flight calls are drained for at most
//! `--drain-timeout`, then the pool closes and the embedded Redis stops.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::{Config, redact_url};
use crate::error::Error;
use crate::limits::Limits;
use crate::pb;
use crate::pb::key_value_server::KeyValueServer;
use crate::redis::embedded::{EmbeddedError, EmbeddedRedis};
use crate::redis::{self, Redis};
use crate::service::kv::KeyValueService;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The embedded redis-server could not start.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The Redis client could not be set up.
    #[error("Redis setup failed: {0}")]
    Redis(#[from] Error),
    /// Reflection could not read the descriptor set.
    #[error("reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl ServeError {
    /// The process exit code: 2 when a prerequisite is missing (as for bad configuration),
    /// 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Embedded(EmbeddedError::NotInstalled { .. }) => 2,
            _ => 1,
        }
    }
}

/// The gRPC services this build registers; health reports each of them.
const SERVICES: &[&str] = &[KeyValueServer::<KeyValueService>::NAME];

/// Serves on `listener` until `shutdown` is cancelled and the drain is over.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let embedded = if config.embedded_redis {
        Some(EmbeddedRedis::start(&config.redis_server_bin, &config.embedded_redis_dir).await?)
    } else {
        None
    };
    let fred_config = redis::fred_config(&config, embedded.as_ref().map(EmbeddedRedis::port))?;
    tracing::info!(
        redis = %describe_target(&config, embedded.as_ref()),
        pool = config.redis_max_connections,
        "connecting to Redis"
    );
    let redis = tokio::select! {
        redis = Redis::connect(&config, fred_config) => redis?,
        () = shutdown.cancelled() => {
            if let Some(embedded) = embedded {
                embedded.stop().await;
            }
            return Ok(());
        }
    };

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health { reporter };
    health.set_all(ServingStatus::NotServing).await;
    let probe = tokio::spawn(probe_redis(
        redis.clone(),
        health.clone(),
        config.health_interval,
        shutdown.clone(),
    ));

    let keyvalue = KeyValueServer::new(KeyValueService::new(
        redis.clone(),
        Limits::from(&config),
        shutdown.clone(),
    ))
    .max_decoding_message_size(config.max_request_bytes);

    tracing::info!(addr = listener.local_addr().ok().map(tracing::field::display), services = ?SERVICES, "serving gRPC");
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let serve = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // A span per call, at debug level: free when the log level is info.
        .trace_fn(|request| tracing::debug_span!("rpc", method = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(keyvalue)
        .serve_with_incoming_shutdown(incoming, {
            let shutdown = shutdown.clone();
            let health = health.clone();
            async move {
                shutdown.cancelled().await;
                health.set_all(ServingStatus::NotServing).await;
                health.end_watches().await;
            }
        });

    let drain_timeout = config.drain_timeout;
    let outcome = tokio::select! {
        outcome = serve => outcome.map_err(ServeError::from),
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain_timeout).await;
        } => {
            tracing::warn!(?drain_timeout, "calls still running after the drain timeout; stopping anyway");
            Ok(())
        }
    };
    // Also ends the probe when the server failed on its own.
    shutdown.cancel();
    let _ = probe.await;
    redis.quit().await;
    if let Some(embedded) = embedded {
        embedded.stop().await;
    }
    tracing::info!("stopped");
    outcome
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
        for service in SERVICES {
            reporter.clear_service_status(service).await;
        }
    }

    async fn set_all(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in SERVICES {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

/// Pings Redis every `interval` and reports SERVING / NOT_SERVING on each change, until
/// shutdown (when the status stays NOT_SERVING).
async fn probe_redis(
    redis: Redis,
    health: Health,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let timeout = interval
        .max(Duration::from_millis(500))
        .min(redis.command_timeout());
    let mut serving = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let reachable = redis.ping(timeout).await;
        if shutdown.is_cancelled() {
            return;
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
        (Some(embedded), _) => format!("embedded redis-server on 127.0.0.1:{}", embedded.port()),
        (None, Some(url)) => redact_url(url),
        (None, None) => format!(
            "{}:{} db {}",
            config.redis_host, config.redis_port, config.redis_db
        ),
    }
}
