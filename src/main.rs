//! The `redis-gateway` binary: parse the configuration, set up logging, bind the listener and
//! run the server until SIGTERM or SIGINT; a second signal exits at once. Exit codes: 0 after
//! a clean drain, 2 for invalid configuration or an unusable Redis, 1 for any other failure at
//! start, 130/143 when a second SIGINT/SIGTERM cut the drain short.
//!
//! The calling thread runs the first of the gateway's single-threaded runtimes (see
//! `redis_gateway::server`).

use std::process::ExitCode;

use clap::Parser;
use redis_gateway::config::Config;
use redis_gateway::{server, telemetry};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the C library's allocator: measured in docs/BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(err) = config.validate() {
        eprintln!("redis-gateway: {err}");
        return ExitCode::from(2);
    }
    telemetry::init(config.log_format);
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the runtime");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(config))
}

/// Raises the soft limit of open files to the hard limit, as servers written in Go do: every
/// client connection is a file, and the usual soft limit of 1,024 would refuse the 1,021st
/// client while the hard limit allows far more.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "open files limit raised"),
            Err(err) => {
                tracing::warn!(error = %err, soft, hard, "cannot raise the open files limit")
            }
        },
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "cannot read the open files limit"),
    }
}

async fn serve(config: Config) -> ExitCode {
    let listeners = match server::Listeners::bind(&config) {
        Ok(listeners) => listeners,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen");
            return ExitCode::from(1);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    match server::run(config, listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "the gateway stopped");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; exits the process on the second.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
        return;
    };
    let mut first = true;
    loop {
        let (name, code) = tokio::select! {
            _ = terminate.recv() => ("SIGTERM", 143),
            _ = interrupt.recv() => ("SIGINT", 130),
        };
        if first {
            tracing::info!(
                signal = name,
                "shutting down: draining in-flight calls (a second signal exits at once)"
            );
            shutdown.cancel();
            first = false;
        } else {
            tracing::warn!(
                signal = name,
                "second signal: exiting without waiting for the drain"
            );
            std::process::exit(code);
        }
    }
}
