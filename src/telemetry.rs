//! Logging: `tracing` to stderr, filtered by RUST_LOG (default `info`), as text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // When stderr is gone (a closed pipe), tracing-subscriber would report the failed
        // write with `eprintln!`, which panics and kills whatever task was logging — even the
        // signal handler. A lost log line must not stop the gateway.
        .log_internal_errors(false)
        // Colours only for a person at a terminal, not in files and collectors.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
