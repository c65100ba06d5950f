//! The embedded Redis: a private `redis-server` child that only the gateway can reach.
//!
//! - No TCP at all (`port 0`): it listens on a unix socket (`unixsocketperm 700`) in a
//!   directory of mode 0700 owned by the gateway's user, `<data dir>/run/`, or a fresh
//!   `redis-gateway-*` directory under `$XDG_RUNTIME_DIR` (else the temp directory) when that
//!   path is too long for a socket address (107 bytes).
//! - Defence in depth: a random password per gateway start (`requirepass`), handed over in a
//!   0600 config file in that directory, never on the command line (`/proc/<pid>/cmdline` is
//!   world-readable).
//! - Its data (append-only file) and its log (`redis.log`) are in the data directory. Its
//!   stdout and stderr go to that log too, so no unread pipe can fill up and block it, and a
//!   failed start reports what it printed. A lock file keeps a second gateway off the same
//!   data directory.
//! - It is restarted with backoff on the same socket if it dies: redis-server replaces the
//!   stale socket file, and nobody else can create one in the private directory meanwhile. It
//!   is stopped with SIGTERM (so it flushes its AOF) when the gateway shuts down.
//!
//! The child is also asked to receive SIGTERM if the gateway itself dies (Linux parent-death
//! signal), so a crashed gateway leaves no orphan redis-server behind. It inherits the data
//! directory's lock, so a new gateway cannot start a second redis-server on the same files
//! while the orphan is still shutting down.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a starting redis-server may take to answer PING (AOF loading included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long redis-server may take to shut down cleanly before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The socket's name in the private runtime directory.
const SOCKET: &str = "redis.sock";
/// The config file (with the password) in the private runtime directory.
const CONFIG_FILE: &str = "redis.conf";
/// redis-server's log in the data directory; also receives its stdout and stderr.
const LOG_FILE: &str = "redis.log";
/// Held (flock) while a gateway and its redis-server use the data directory.
const LOCK_FILE: &str = "embedded.lock";
/// Longest unix socket path: `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// How much of its output a failed redis-server start reports.
const REPORTED_LINES: usize = 10;

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
    /// The data directory could not be created or used.
    #[error("cannot use the embedded Redis data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another gateway (or its redis-server) is using the data directory.
    #[error(
        "the embedded Redis data directory {dir} is in use by another gateway; \
         stop it or choose another GATEWAY_EMBEDDED_REDIS_DIR"
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
    /// redis-server started but did not become ready.
    #[error("the embedded redis-server did not start: {0}")]
    Start(String),
}

/// How the gateway reaches the embedded Redis: its unix socket and password.
#[derive(Clone)]
pub struct EmbeddedTarget {
    socket: PathBuf,
    password: String,
}

impl EmbeddedTarget {
    /// The unix socket redis-server listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The password redis-server requires (random per gateway start); never log it.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for EmbeddedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedTarget")
            .field("socket", &self.socket)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A supervised redis-server child.
pub struct EmbeddedRedis {
    /// Where it listens, and its password.
    target: EmbeddedTarget,
    /// Cancelled to stop the child.
    stop: CancellationToken,
    /// The supervising task; ends once the child has stopped.
    supervisor: JoinHandle<()>,
}

/// The private directory holding the socket and the config file.
enum RuntimeDir {
    /// `<data dir>/run`, kept across starts.
    InDataDir(PathBuf),
    /// A fresh directory, removed when dropped (after the child has stopped).
    Temporary(tempfile::TempDir),
}

impl RuntimeDir {
    fn path(&self) -> &Path {
        match self {
            Self::InDataDir(path) => path,
            Self::Temporary(dir) => dir.path(),
        }
    }
}

/// How to start the child, and what must live as long as it may run.
struct Launch {
    program: PathBuf,
    dir: PathBuf,
    config_file: PathBuf,
    target: EmbeddedTarget,
    /// Holds the socket; dropped only once the supervisor is done.
    _runtime: RuntimeDir,
    /// The data directory's lock; each child inherits it.
    lock: Arc<Flock<File>>,
}

impl Drop for Launch {
    /// The password is only needed while redis-server may start. A temporary runtime directory
    /// is removed right after this, with `_runtime`.
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.config_file) {
            tracing::debug!(error = %err, "removing the embedded Redis config file");
        }
    }
}

impl EmbeddedRedis {
    /// Starts redis-server with its data in `dir` and waits until it answers PING.
    pub async fn start(program: &Path, dir: &Path) -> Result<Self, EmbeddedError> {
        let data_dir_error = |source| EmbeddedError::DataDir {
            dir: dir.to_owned(),
            source,
        };
        // Directories created here are private; an existing one keeps its mode.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(data_dir_error)?;
        let dir = fs::canonicalize(dir).map_err(data_dir_error)?;
        let lock = Arc::new(lock_data_dir(&dir)?);
        let runtime = RuntimeDir::create(&dir).map_err(|err| {
            EmbeddedError::Start(format!("cannot create a private socket directory: {err}"))
        })?;
        let password = random_password()
            .map_err(|err| EmbeddedError::Start(format!("cannot draw a password: {err}")))?;
        let config_file = runtime.path().join(CONFIG_FILE);
        write_private_file(&config_file, format!("requirepass {password}\n").as_bytes()).map_err(
            |err| EmbeddedError::Start(format!("cannot write {}: {err}", config_file.display())),
        )?;
        let target = EmbeddedTarget {
            socket: runtime.path().join(SOCKET),
            password,
        };
        let launch = Launch {
            program: program.to_owned(),
            dir,
            config_file,
            target: target.clone(),
            _runtime: runtime,
            lock,
        };
        let (child, log_offset) = launch.spawn()?;
        let child = launch.wait_ready(child, log_offset).await?;
        tracing::info!(
            // The child was not reaped yet, so it has an id.
            pid = child.id().unwrap_or_default(),
            socket = %target.socket.display(),
            dir = %launch.dir.display(),
            "embedded redis-server is up"
        );
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(launch, child, stop.clone()));
        Ok(Self {
            target,
            stop,
            supervisor,
        })
    }

    /// Where the embedded Redis listens, and its password.
    pub fn target(&self) -> &EmbeddedTarget {
        &self.target
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
    /// Starts redis-server; returns the child and where its output starts in the log.
    fn spawn(&self) -> Result<(Child, u64), EmbeddedError> {
        let log_path = self.dir.join(LOG_FILE);
        let data_dir_error = |source| EmbeddedError::DataDir {
            dir: self.dir.clone(),
            source,
        };
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(data_dir_error)?;
        let log_offset = stdout.metadata().map_err(data_dir_error)?.len();
        let stderr = stdout.try_clone().map_err(data_dir_error)?;
        let mut command = Command::new(&self.program);
        command
            // The config file must come first; it holds the password.
            .arg(&self.config_file)
            .args(["--port", "0"])
            .arg("--unixsocket")
            .arg(&self.target.socket)
            .args(["--unixsocketperm", "700"])
            .args(["--daemonize", "no"])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "everysec"])
            .args(["--save", ""])
            .args(["--logfile", LOG_FILE])
            .arg("--dir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        let lock_fd = self.lock.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls prctl and
        // fcntl, which are async-signal-safe. `lock_fd` is open: `self.lock` outlives the call.
        unsafe {
            command.pre_exec(move || {
                #[cfg(target_os = "linux")]
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                // Keep the data directory's lock open in redis-server.
                nix::fcntl::fcntl(
                    BorrowedFd::borrow_raw(lock_fd),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
                Ok(())
            });
        }
        let child = command.spawn().map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                EmbeddedError::NotInstalled {
                    program: self.program.display().to_string(),
                }
            } else {
                EmbeddedError::Start(format!("{}: {err}", self.program.display()))
            }
        })?;
        Ok((child, log_offset))
    }

    /// Waits until the child answers PING, or fails with what it printed if it exits.
    async fn wait_ready(&self, mut child: Child, log_offset: u64) -> Result<Child, EmbeddedError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|err| EmbeddedError::Start(err.to_string()))?
            {
                return Err(EmbeddedError::Start(format!(
                    "redis-server exited with {status}: {}",
                    self.output_since(log_offset)
                )));
            }
            if ping(&self.target).await {
                return Ok(child);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EmbeddedError::Start(format!(
                    "no answer to PING on {} within {READY_TIMEOUT:?}: {}",
                    self.target.socket.display(),
                    self.output_since(log_offset)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines redis-server wrote (log, stdout and stderr) since `offset` in its log.
    fn output_since(&self, offset: u64) -> String {
        let read = || {
            let mut log = File::open(self.dir.join(LOG_FILE))?;
            let end = log.metadata()?.len();
            // A few lines' worth: one huge line must not flood the error message.
            let start = offset.max(end.saturating_sub(4096));
            log.seek(SeekFrom::Start(start))?;
            let mut bytes = Vec::new();
            log.read_to_end(&mut bytes)?;
            io::Result::Ok(bytes)
        };
        match read() {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect();
                lines[lines.len().saturating_sub(REPORTED_LINES)..].join(" | ")
            }
            Err(err) => format!("(cannot read {LOG_FILE}: {err})"),
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
                () = stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            let restarted = match launch.spawn() {
                // A shutdown during the restart drops the half-started child (kill on drop).
                Ok((spawned, log_offset)) => tokio::select! {
                    () = stop.cancelled() => break,
                    ready = launch.wait_ready(spawned, log_offset) => ready,
                },
                Err(err) => Err(err),
            };
            match restarted {
                Ok(ready) => {
                    tracing::info!(
                        // The child was not reaped yet, so it has an id.
                        pid = ready.id().unwrap_or_default(),
                        "embedded redis-server restarted"
                    );
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
                break;
            }
            status = running.wait() => {
                tracing::warn!(?status, "the embedded redis-server exited; restarting it");
                child = None;
            }
        }
    }
    // `launch` drops here: the password file goes, and the data directory's lock is released.
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

/// Takes the data directory's lock, or fails if another gateway holds it.
fn lock_data_dir(dir: &Path) -> Result<Flock<File>, EmbeddedError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))
        .map_err(|source| EmbeddedError::DataDir {
            dir: dir.to_owned(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            EmbeddedError::InUse {
                dir: dir.to_owned(),
            }
        } else {
            EmbeddedError::DataDir {
                dir: dir.to_owned(),
                source: errno.into(),
            }
        }
    })
}

impl RuntimeDir {
    /// `<data dir>/run` if the socket path fits, else a fresh directory in a short place.
    fn create(data_dir: &Path) -> io::Result<Self> {
        let in_data_dir = data_dir.join("run");
        if socket_fits(&in_data_dir) {
            match fs::DirBuilder::new().mode(0o700).create(&in_data_dir) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
            make_private(&in_data_dir)?;
            return Ok(Self::InDataDir(in_data_dir));
        }
        let bases = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|base| base.is_absolute())
            .into_iter()
            .chain([std::env::temp_dir(), PathBuf::from("/tmp")]);
        let mut last_error = None;
        for base in bases {
            let created = tempfile::Builder::new()
                .prefix("redis-gateway-")
                .permissions(fs::Permissions::from_mode(0o700))
                .tempdir_in(&base);
            match created {
                Ok(dir) if socket_fits(dir.path()) => {
                    make_private(dir.path())?;
                    return Ok(Self::Temporary(dir));
                }
                Ok(_) => {}
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::other(format!(
                "no directory gives a socket path under {MAX_SOCKET_PATH} bytes"
            ))
        }))
    }
}

/// True when a socket in `dir` has a short enough path.
fn socket_fits(dir: &Path) -> bool {
    dir.join(SOCKET).as_os_str().len() <= MAX_SOCKET_PATH
}

/// Checks that `dir` is a real directory owned by this user, and sets its mode to 0700.
fn make_private(dir: &Path) -> io::Result<()> {
    let metadata = fs::symlink_metadata(dir)?;
    if !metadata.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if metadata.uid() != nix::unistd::geteuid().as_raw() {
        return Err(io::Error::other(format!(
            "{} belongs to another user",
            dir.display()
        )));
    }
    if metadata.mode() & 0o7777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Replaces `path` with a file only its owner can read, holding `contents`.
fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// 32 random bytes from the kernel, in hex.
fn random_password() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// A command in RESP form.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// True when the redis-server behind `target` accepts the password and answers PING with
/// PONG (not LOADING). Only its own child can listen on that socket.
async fn ping(target: &EmbeddedTarget) -> bool {
    let attempt = async {
        let mut stream = BufReader::new(UnixStream::connect(&target.socket).await?);
        let mut request = resp(&[b"AUTH", target.password.as_bytes()]);
        request.extend(resp(&[b"PING"]));
        stream.get_mut().write_all(&request).await?;
        let mut auth = String::new();
        stream.read_line(&mut auth).await?;
        let mut pong = String::new();
        stream.read_line(&mut pong).await?;
        io::Result::Ok(auth == "+OK\r\n" && pong == "+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_longer_than_sun_path_do_not_fit() {
        let short = Path::new("/tmp/run");
        assert!(socket_fits(short));
        let long = PathBuf::from(format!("/{}", "d".repeat(MAX_SOCKET_PATH)));
        assert!(!socket_fits(&long));
        let exact = PathBuf::from(format!(
            "/{}",
            "d".repeat(MAX_SOCKET_PATH - SOCKET.len() - 2)
        ));
        assert_eq!(exact.join(SOCKET).as_os_str().len(), MAX_SOCKET_PATH);
        assert!(socket_fits(&exact));
    }

    #[test]
    fn a_long_data_dir_gets_a_private_runtime_dir_elsewhere() {
        let data = tempfile::tempdir().unwrap();
        let long = data.path().join("d".repeat(MAX_SOCKET_PATH));
        fs::create_dir(&long).unwrap();
        let runtime = RuntimeDir::create(&long).unwrap();
        assert!(matches!(runtime, RuntimeDir::Temporary(_)));
        assert!(socket_fits(runtime.path()));
        let mode = fs::metadata(runtime.path()).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let path = runtime.path().to_owned();
        drop(runtime);
        assert!(!path.exists(), "the temporary runtime dir is removed");
    }

    #[test]
    fn the_runtime_dir_in_the_data_dir_is_made_private() {
        let data = tempfile::tempdir().unwrap();
        let run = data.path().join("run");
        fs::create_dir(&run).unwrap();
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        let runtime = RuntimeDir::create(data.path()).unwrap();
        assert_eq!(runtime.path(), run);
        assert_eq!(fs::metadata(&run).unwrap().mode() & 0o7777, 0o700);
    }

    #[test]
    fn the_password_is_random_hex() {
        let first = random_password().unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(first, random_password().unwrap());
    }
}
