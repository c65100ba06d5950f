//! The embedded Redis: a private `redis-server` child on a free loopback port, with its data
//! (append-only file) in a local directory. It is restarted on the same port if it dies, and
//! stopped with SIGTERM (so it flushes its AOF) when the gateway shuts down.
//!
//! The child is also asked to receive SIGTERM if the gateway itself dies (Linux parent-death
//! signal), so a crashed gateway leaves no orphan redis-server behind.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a starting redis-server may take to answer PING (AOF loading included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long redis-server may take to shut down cleanly before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the embedded Redis could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The redis-server program is not installed.
    #[error(
        "`{program}` was not found. Install it (Debian/Ubuntu: `sudo apt-get install -y redis-server`), \
         set GATEWAY_REDIS_SERVER_BIN to its path, or use an existing Redis with \
         REDIS_URL=redis://host:6379 instead of --embedded-redis"
    )]
    NotInstalled {
        /// The program that was looked for.
        program: String,
    },
    /// The data directory could not be created.
    #[error("cannot create the embedded Redis data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// redis-server started but did not become ready.
    #[error("the embedded redis-server did not start: {0}")]
    Start(String),
}

/// A supervised redis-server child.
pub struct EmbeddedRedis {
    /// The loopback port it listens on.
    port: u16,
    /// Cancelled to stop the child.
    stop: CancellationToken,
    /// The supervising task; ends once the child has stopped.
    supervisor: JoinHandle<()>,
}

/// How to start the child.
#[derive(Debug, Clone)]
struct Launch {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl EmbeddedRedis {
    /// Starts redis-server with its data in `dir` and waits until it answers PING.
    pub async fn start(program: &Path, dir: &Path) -> Result<Self, EmbeddedError> {
        std::fs::create_dir_all(dir).map_err(|source| EmbeddedError::DataDir {
            dir: dir.to_owned(),
            source,
        })?;
        let dir = std::fs::canonicalize(dir).map_err(|source| EmbeddedError::DataDir {
            dir: dir.to_owned(),
            source,
        })?;
        let port = free_loopback_port()
            .map_err(|err| EmbeddedError::Start(format!("no free loopback port: {err}")))?;
        let launch = Launch {
            program: program.to_owned(),
            dir,
            port,
        };
        let child = launch.spawn()?;
        let child = launch.wait_ready(child).await?;
        tracing::info!(port, dir = %launch.dir.display(), "embedded redis-server is up");
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(launch, child, stop.clone()));
        Ok(Self {
            port,
            stop,
            supervisor,
        })
    }

    /// The loopback port the embedded Redis listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops redis-server cleanly (SIGTERM, then SIGKILL after a grace period) and waits.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(err) = self.supervisor.await {
            tracing::warn!(error = %err, "embedded Redis supervisor failed");
        }
    }
}

impl Launch {
    fn spawn(&self) -> Result<Child, EmbeddedError> {
        let mut command = Command::new(&self.program);
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--protected-mode", "yes"])
            .args(["--daemonize", "no"])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "everysec"])
            .args(["--save", ""])
            .args(["--logfile", "redis.log"])
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(io::Error::from)
            });
        }
        command.spawn().map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                EmbeddedError::NotInstalled {
                    program: self.program.display().to_string(),
                }
            } else {
                EmbeddedError::Start(format!("{}: {err}", self.program.display()))
            }
        })
    }

    /// Waits until the child answers PING, or fails with what it printed if it exits.
    async fn wait_ready(&self, mut child: Child) -> Result<Child, EmbeddedError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|err| EmbeddedError::Start(err.to_string()))?
            {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(EmbeddedError::Start(format!(
                    "redis-server exited with {status}: {} {}",
                    stderr.trim(),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            if ping(self.port).await {
                return Ok(child);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EmbeddedError::Start(format!(
                    "no answer to PING on port {} within {READY_TIMEOUT:?}",
                    self.port
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Keeps the child running until `stop`, restarting it with backoff when it dies.
async fn supervise(launch: Launch, child: Child, stop: CancellationToken) {
    let mut child = Some(child);
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(running) = child.as_mut() else {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            let restarted = match launch.spawn() {
                // A shutdown during the restart drops the half-started child (kill on drop).
                Ok(spawned) => tokio::select! {
                    () = stop.cancelled() => return,
                    ready = launch.wait_ready(spawned) => ready,
                },
                Err(err) => Err(err),
            };
            match restarted {
                Ok(ready) => {
                    tracing::info!(port = launch.port, "embedded redis-server restarted");
                    backoff = Duration::from_millis(100);
                    child = Some(ready);
                }
                Err(err) => {
                    tracing::error!(error = %err, "restarting the embedded redis-server")
                }
            }
            continue;
        };
        tokio::select! {
            () = stop.cancelled() => {
                terminate(running).await;
                return;
            }
            status = running.wait() => {
                tracing::warn!(?status, "the embedded redis-server exited; restarting it");
                child = None;
            }
        }
    }
}

/// SIGTERM (redis-server flushes its AOF and exits), then SIGKILL after STOP_TIMEOUT.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        if let Err(err) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            tracing::warn!(error = %err, "signalling the embedded redis-server");
        }
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(_) => tracing::info!("embedded redis-server stopped"),
        Err(_) => {
            tracing::warn!("embedded redis-server did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_loopback_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// True when a Redis on `port` answers PING with PONG (not LOADING).
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        io::Result::Ok(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}
