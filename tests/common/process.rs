//! The gateway binary as a separate process: started with arguments and environment, its
//! log captured line by line (so a test can wait for "serving gRPC" and read the address).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::mpsc;

pub const BINARY: &str = env!("CARGO_BIN_EXE_redis-gateway");

/// Starts the gateway binary with `args` and `envs`; its stderr is captured.
pub fn spawn_gateway(args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in envs {
        command.env(name, value);
    }
    command.spawn().expect("start the gateway binary")
}

/// A gateway binary started by [`start_gateway_process`].
pub struct GatewayProcess {
    /// The process; killed if dropped.
    pub child: Child,
    /// Where it listens, as its "serving gRPC" log line says.
    pub addr: SocketAddr,
    /// Its stderr: the lines up to "serving gRPC" have been read, none is lost.
    pub log: Log,
}

/// Starts the gateway binary listening on 127.0.0.1:0 with `args` and `envs`, and reads its
/// log until it says where it serves (so no port is probed and released first).
pub async fn start_gateway_process(args: &[&str], envs: &[(&str, &str)]) -> GatewayProcess {
    let mut argv = vec!["--listen", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let mut child = spawn_gateway(&argv, envs);
    let mut log = Log::capture(child.stderr.take().expect("stderr is piped"));
    let line = log.wait_for("serving gRPC", Duration::from_secs(20)).await;
    let addr = logged_addr(&line).unwrap_or_else(|| panic!("no addr in {line:?}"));
    GatewayProcess { child, addr, log }
}

/// The listen address in a "serving gRPC" log line: `addr=127.0.0.1:PORT` in the text format,
/// `"addr":"127.0.0.1:PORT"` in JSON.
pub fn logged_addr(line: &str) -> Option<SocketAddr> {
    let plain = strip_ansi(line);
    let text = plain
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="));
    let json = || {
        let (_, rest) = plain.split_once(r#""addr":""#)?;
        rest.split('"').next()
    };
    text.or_else(json)?.parse().ok()
}

/// A child's stderr lines, read in the background so the child never blocks on a full pipe.
pub struct Log {
    /// Lines as the reader task reads them; closed at end of file.
    receiver: mpsc::UnboundedReceiver<String>,
    /// The lines taken from `receiver` so far.
    seen: Vec<String>,
}

impl Log {
    /// Starts reading `stderr` in a background task.
    pub fn capture(stderr: ChildStderr) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            receiver,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text` (colours aside) and returns that line; fails if
    /// the log ends or `within` passes first.
    pub async fn wait_for(&mut self, text: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.receiver.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no {text:?} in the log within {within:?}: {:#?}", self.seen)
                })
                .unwrap_or_else(|| panic!("the log ended without {text:?}: {:#?}", self.seen));
            self.seen.push(line.clone());
            if strip_ansi(&line).contains(text) {
                return line;
            }
        }
    }

    /// The lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Every line, from the first, once the child has closed stderr (exited); fails if that
    /// takes longer than `within`.
    pub async fn into_lines(mut self, within: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) => return self.seen,
                Err(_) => panic!("the log did not end within {within:?}: {:#?}", self.seen),
            }
        }
    }
}

/// `text` without ANSI colour sequences.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
