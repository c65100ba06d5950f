//! The `redis-gateway` binary: parse the configuration, set up logging, bind the listener and
//! run the server until SIGTERM or SIGINT. Exit codes: 0 after a clean drain, 2 for invalid
//! configuration, 1 for any other failure at start.

use std::process::ExitCode;

use clap::Parser;
use redis_gateway::config::Config;
use redis_gateway::{server, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(err) = config.validate() {
        eprintln!("redis-gateway: {err}");
        return ExitCode::from(2);
    }
    telemetry::init(config.log_format);

    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(listen = %config.listen, error = %err, "cannot listen (GATEWAY_LISTEN)");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    match server::run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "the gateway stopped");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down: draining in-flight calls");
    shutdown.cancel();
}
