//! Test fixtures: private `redis-server` processes on free loopback ports (never 6379, never a
//! Redis the tests did not start), the gateway in-process on 127.0.0.1:0, and typed clients.
//!
//! - [`shared_redis`]: one Redis per test binary, shared by its tests (one redis-server, or a
//!   cluster of six with `GATEWAY_TEST_REDIS=cluster`); tests keep apart by using
//!   [`unique_key`] names.
//! - [`cluster::RedisCluster::start`]: a private Redis Cluster, three primaries and three
//!   replicas.
//! - [`RedisServer::start`]: a private one a test may stop and restart (fault tests).
//! - [`Gateway::start`]: the gateway over a given Redis URL.
//! - [`process::start_gateway_process`]: the gateway binary as its own process.
#![allow(dead_code)]

pub mod cluster;
pub mod locks;
pub mod process;
pub mod programs;
pub mod requests;
pub mod sentinel;
pub mod tls;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use fred::prelude::*;
use redis_gateway::config::Config;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::server::{self, ServeError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A hash tag no other test uses, `{<label>:<pid>:<counter>}`: keys that start with it share a
/// Redis Cluster slot, as calls that are atomic over several keys need.
pub fn slot_tag(label: &str) -> String {
    format!("{{{}}}", unique_key(label))
}

/// A loopback port that was free a moment ago: anything may take it before it is used, so a
/// caller must check who listens there (as [`RedisServer::start`] does) or, better, bind
/// 127.0.0.1:0 itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("no free loopback port")
        .port()
}

/// A name no other test (or earlier run) uses: `<label>:<pid>:<counter>`.
pub fn unique_key(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{label}:{}:{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A redis-server child process owned by the tests.
pub struct RedisServer {
    /// The loopback port it listens on (kept across restarts).
    pub port: u16,
    /// A secured server's TLS port (see [`tls`]); the plain `port` is for the fixtures.
    pub tls_port: Option<u16>,
    /// Its working directory.
    dir: tempfile::TempDir,
    /// The running process, if any.
    child: Mutex<Option<Child>>,
    /// Extra redis-server arguments, kept across restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a private redis-server on a free port and waits until it answers.
    ///
    /// The port is probed, then released before redis-server binds it, so another process can
    /// take it in between: then either redis-server fails to bind and exits, or someone else
    /// answers. Only a reply naming this child's pid counts; otherwise another port is tried.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`RedisServer::start`], with extra redis-server arguments (e.g. `--maxmemory 2mb`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_configured(extra, false)
    }

    /// As [`RedisServer::start_with`], secured (see [`tls`]): TLS on a port of its own with
    /// the test certificates, and ACL users. `extra` comes last, so it may override them
    /// (e.g. `--tls-auth-clients yes`).
    pub fn start_secured(extra: &[&str]) -> Self {
        Self::start_configured(extra, true)
    }

    fn start_configured(extra: &[&str], secured: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let password = secured.then_some(tls::ADMIN_PASSWORD);
        let mut failures = Vec::new();
        for _ in 0..10 {
            let port = free_port();
            let tls_port = secured.then(free_port);
            let mut args = Vec::new();
            if let Some(tls_port) = tls_port {
                args.extend(tls::TlsFiles::shared().redis_args(tls_port));
                args.extend(tls::acl_args());
            }
            args.extend(extra.iter().map(|arg| (*arg).to_owned()));
            match spawn_redis_server(port, dir.path(), &args, password) {
                Ok(child) => {
                    return Self {
                        port,
                        tls_port,
                        dir,
                        child: Mutex::new(Some(child)),
                        extra: args,
                    };
                }
                Err(failure) => failures.push(format!("port {port}: {failure}")),
            }
        }
        panic!("redis-server did not start on any port: {failures:#?}");
    }

    /// The URL the gateway is given: `redis://127.0.0.1:<port>`, or for a secured server
    /// `rediss://gateway:<password>@127.0.0.1:<tls port>`.
    pub fn url(&self) -> String {
        match self.tls_port {
            Some(tls_port) => format!(
                "rediss://{}:{}@127.0.0.1:{tls_port}",
                tls::GATEWAY_USER,
                tls::GATEWAY_PASSWORD
            ),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The `default` user's password, on a secured server.
    pub fn admin_password(&self) -> Option<&'static str> {
        self.tls_port.map(|_| tls::ADMIN_PASSWORD)
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .expect("redis-server is running")
            .id()
    }

    /// Whether the server process is running (not stopped by [`RedisServer::stop`]).
    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn suspend(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
            .expect("SIGSTOP redis-server");
    }

    /// Lets a suspended server run again (SIGCONT).
    pub fn resume(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)
            .expect("SIGCONT redis-server");
    }

    /// Kills the server (as a crash would) and waits for it to be gone.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&self) {
        self.stop();
        let child = spawn_redis_server(
            self.port,
            self.dir.path(),
            &self.extra,
            self.admin_password(),
        )
        .unwrap_or_else(|failure| panic!("redis-server did not restart: {failure}"));
        *self.child.lock().unwrap() = Some(child);
    }

    /// A direct fred client to this server, for setting up and checking state.
    pub async fn client(&self) -> Client {
        let url = match self.admin_password() {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        };
        let config = fred::types::config::Config::from_url(&url).unwrap();
        let client = Builder::from_config(config).build().unwrap();
        client.init().await.unwrap();
        client
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts redis-server on `port` with its files in `dir` and waits until it answers as itself:
/// `INFO server` must report the child's own pid. On failure the child is gone and the error
/// says who held the port.
fn spawn_redis_server(
    port: u16,
    dir: &std::path::Path,
    extra: &[String],
    password: Option<&str>,
) -> Result<Child, String> {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut command);
    let mut child = command.spawn().expect(
        "cannot start redis-server: install it (apt-get install -y redis-server) or run `make test`",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let failure = loop {
        if let Some(status) = child.try_wait().expect("wait for redis-server") {
            // Most likely the port was taken and the bind failed.
            return Err(format!("redis-server exited at start ({status})"));
        }
        match server_pid(port, password) {
            Some(pid) if pid == child.id() => return Ok(child),
            Some(pid) => break format!("another redis-server (pid {pid}) answered there"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {port} did not answer within 10 s");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    Err(failure)
}

/// Makes the child die with the thread that started it (at the latest when the test process
/// exits), so that no redis-server outlives the tests.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// The `process_id` that the redis-server on `port` reports in `INFO server` (after `AUTH
/// password`, when given), or `None` when nothing answers there as a ready Redis does
/// (refused, an error reply, not RESP).
fn server_pid(port: u16, password: Option<&str>) -> Option<u32> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    if let Some(password) = password {
        stream
            .write_all(format!("AUTH {password}\r\n").as_bytes())
            .ok()?;
    }
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    if password.is_some() {
        let mut ok = String::new();
        reader.read_line(&mut ok).ok()?;
        if !ok.starts_with("+OK") {
            return None;
        }
    }
    // A bulk string: `$<length>\r\n<text>\r\n`.
    let mut header = String::new();
    reader.read_line(&mut header).ok()?;
    let length: usize = header.strip_prefix('$')?.trim_end().parse().ok()?;
    let mut text = vec![0; length];
    reader.read_exact(&mut text).ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()
}

/// The Redis deployment the shared tests run against: set `GATEWAY_TEST_REDIS=cluster` to run
/// a test binary's shared-Redis tests against a [`cluster::RedisCluster`] instead of one
/// redis-server (`make test` runs the behaviour suites both ways).
pub enum Deployment {
    /// One redis-server.
    Standalone(RedisServer),
    /// Three primaries and three replicas.
    Cluster(cluster::RedisCluster),
}

impl Deployment {
    /// The URL the gateway is given.
    pub fn url(&self) -> String {
        match self {
            Self::Standalone(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// A direct client, for setting up and checking state.
    pub async fn client(&self) -> Client {
        match self {
            Self::Standalone(server) => server.client().await,
            Self::Cluster(cluster) => cluster.client().await,
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Every key matching `pattern` (KEYS, on every primary of a cluster).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = self.client().await;
        let primaries = client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default();
        let mut found = Vec::new();
        if primaries.is_empty() {
            let keys: Vec<String> = client
                .custom(fred::cmd!("KEYS"), vec![pattern])
                .await
                .expect("KEYS");
            found.extend(keys);
        }
        for primary in primaries {
            let keys: Vec<String> = client
                .with_cluster_node(primary)
                .custom(fred::cmd!("KEYS"), vec![pattern])
                .await
                .expect("KEYS");
            found.extend(keys);
        }
        found
    }
}

/// A private Redis deployment for one test, of the kind `GATEWAY_TEST_REDIS` names (see
/// [`Deployment`]): for tests that need their own Redis but nothing a cluster lacks (restarts,
/// server flags and the like use [`RedisServer`]).
pub fn private_redis() -> Deployment {
    match std::env::var("GATEWAY_TEST_REDIS").as_deref() {
        Ok("cluster") => Deployment::Cluster(cluster::RedisCluster::start()),
        _ => Deployment::Standalone(RedisServer::start()),
    }
}

/// The Redis deployment shared by the tests of one test binary (see [`Deployment`]).
///
/// It is started from a thread that lives as long as the process, so the parent-death signal
/// stops it when the test binary exits.
pub fn shared_redis() -> &'static Deployment {
    static SHARED: OnceLock<&'static Deployment> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let deployment = match std::env::var("GATEWAY_TEST_REDIS").as_deref() {
                Ok("cluster") => Deployment::Cluster(cluster::RedisCluster::start()),
                Ok("standalone") | Err(_) => Deployment::Standalone(RedisServer::start()),
                Ok(other) => panic!("GATEWAY_TEST_REDIS={other}: expected standalone or cluster"),
            };
            let server: &'static Deployment = Box::leak(Box::new(deployment));
            sender.send(server).unwrap();
            loop {
                std::thread::park();
            }
        });
        receiver.recv().expect("redis fixture thread failed")
    })
}

/// The gateway, running in-process on 127.0.0.1:0.
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves metrics, when started with `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// Cancel to shut it down.
    pub shutdown: CancellationToken,
    /// The server task; resolves when it has stopped.
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Gateway {
    /// Starts the gateway over `redis_url` (empty: `args` name Redis) with extra command-line
    /// `args`, and waits until health reports SERVING.
    pub async fn start(redis_url: &str, args: &[&str]) -> Self {
        let gateway = Self::start_unchecked(redis_url, args).await;
        gateway
            .wait_for_health(ServingStatus::Serving, Duration::from_secs(10))
            .await;
        gateway
    }

    /// Starts the gateway without waiting for Redis.
    pub async fn start_unchecked(redis_url: &str, args: &[&str]) -> Self {
        // Gateway logs go to the test's captured output (shown when a test fails).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        // An empty URL: the test names Redis by explicit settings (REDIS_MODE, ...) in `args`.
        let mut argv = vec!["redis-gateway"];
        if !redis_url.is_empty() {
            argv.extend(["--redis-url", redis_url]);
        }
        // Test defaults, unless the test sets them itself.
        for (flag, value) in [
            ("--health-interval", "100ms"),
            ("--redis-connect-timeout", "1s"),
            ("--listen", "127.0.0.1:0"),
        ] {
            if !args.contains(&flag) {
                argv.extend([flag, value]);
            }
        }
        argv.extend_from_slice(args);
        let config = Config::parse_from(argv);
        config.validate().expect("test configuration is valid");
        // As the binary does (SO_REUSEPORT, so further runtimes get their own sockets); the
        // ports the kernel picked are read back.
        let listeners = server::Listeners::bind(&config).expect("bind the test listeners");
        let addr = listeners.grpc.local_addr().unwrap();
        let metrics_addr = listeners
            .metrics
            .as_ref()
            .map(|listener| listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::run(config, listeners, shutdown.clone()));
        Self {
            addr,
            metrics_addr,
            shutdown,
            task: Some(task),
        }
    }

    /// A connected channel to the gateway.
    pub async fn channel(&self) -> Channel {
        connect_channel(self.addr, Duration::from_secs(10)).await
    }

    /// A KeyValue client.
    pub async fn kv(&self) -> KeyValueClient<Channel> {
        KeyValueClient::new(self.channel().await)
    }

    /// The metrics endpoint's answer to `GET /metrics`: the status line and the body.
    pub async fn scrape(&self) -> (String, String) {
        let addr = self
            .metrics_addr
            .expect("the gateway was started with --metrics-listen");
        http_get(addr, "/metrics").await
    }

    /// A health client.
    pub async fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    /// The health status of `service` ("" for the whole server).
    pub async fn health_status(&self, service: &str) -> ServingStatus {
        let reply = self
            .health()
            .await
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health check answers");
        reply.into_inner().status()
    }

    /// Waits until the overall health is `wanted`, failing after `within`.
    pub async fn wait_for_health(&self, wanted: ServingStatus, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self.health_status("").await;
            if status == wanted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "health stayed {status:?}, expected {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the server stops by itself and returns what it returned.
    pub async fn stopped(mut self) -> Result<(), ServeError> {
        self.task.take().unwrap().await.expect("server task")
    }

    /// Shuts down and returns what the server returned.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        self.task.take().unwrap().await.expect("server task")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A gateway with extra command-line `args` over the shared Redis, and a KeyValue client to it.
pub async fn start_with(args: &[&str]) -> (Gateway, KeyValueClient<Channel>) {
    let gateway = Gateway::start(&shared_redis().url(), args).await;
    let kv = gateway.kv().await;
    (gateway, kv)
}

/// A channel to a gateway at `addr`, retrying while it starts, for at most `within`.
pub async fn connect_channel(addr: SocketAddr, within: Duration) -> Channel {
    let deadline = Instant::now() + within;
    loop {
        match Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(err) => {
                assert!(Instant::now() < deadline, "gateway not reachable: {err}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A plain HTTP/1.1 GET of `path` from `addr`: the status line and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the HTTP answer within 10 s")
    .unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Waits until at least `count` clients of the Redis behind `admin` are held (by CLIENT PAUSE)
/// with `command` (lower case, as CLIENT LIST names it) waiting to run, failing after `within`.
///
/// This is how a test knows that a call it started has reached Redis and waits there.
pub async fn wait_for_held_commands(admin: &Client, command: &str, count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let clients: String = admin
            .custom(fred::cmd!("CLIENT"), vec!["LIST"])
            .await
            .expect("CLIENT LIST");
        let held = clients
            .lines()
            .filter(|client| {
                let mut fields = client.split_whitespace();
                let blocked = fields.clone().any(|field| {
                    field
                        .strip_prefix("flags=")
                        .is_some_and(|f| f.contains('b'))
                });
                blocked && fields.any(|field| field.strip_prefix("cmd=") == Some(command))
            })
            .count();
        if held >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{held} of {count} `{command}` commands waiting in Redis after {within:?}:\n{clients}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A request with a gRPC deadline.
pub fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Asserts that `result` failed with `code`; returns the status.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
) -> tonic::Status {
    let status = result.expect_err(&format!("expected {code:?}"));
    assert_eq!(status.code(), code, "{status:?}");
    status
}

/// Asserts that `result` failed with `code` and a message that starts with `{field}:`.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    field: &str,
) {
    let status = assert_code(result, code);
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "message {:?} should name `{field}`",
        status.message()
    );
}

/// A protobuf Duration.
pub fn duration(timeout: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: timeout.as_secs() as i64,
        nanos: timeout.subsec_nanos() as i32,
    }
}

/// One IPv4 TCP socket, from /proc/net/tcp.
pub struct TcpSocket {
    /// Local address and port, as `/proc` writes them (address in hex).
    local: (String, u16),
    /// Remote address and port.
    remote: (String, u16),
    /// ESTABLISHED.
    established: bool,
    /// Bytes received that its owner has not read yet.
    unread: usize,
    /// Its inode, which names it in its owner's /proc/<pid>/fd.
    inode: u64,
}

/// The IPv4 TCP sockets of this network namespace.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    fn endpoint(text: &str) -> Option<(String, u16)> {
        let (address, port) = text.split_once(':')?;
        Some((address.to_owned(), u16::from_str_radix(port, 16).ok()?))
    }
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr tm->when retrnsmt uid
            // timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, unread) = fields.get(4)?.split_once(':')?;
            Some(TcpSocket {
                local: endpoint(fields.get(1)?)?,
                remote: endpoint(fields.get(2)?)?,
                established: *fields.get(3)? == "01",
                unread: usize::from_str_radix(unread, 16).ok()?,
                inode: fields.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The inodes of the sockets process `pid` has open (as /proc/net/tcp names them).
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            inode.parse().ok()
        })
        .collect()
}

/// Bytes that process `pid` (this test process for an in-process gateway, or a gateway
/// binary) sent to the redis-server on `port` and that Redis has not read yet: the receive
/// queues of Redis's ends of its connections. While Redis is stopped, what the gateway sends it
/// piles up there. Connections of other processes (a stray client that found the port) do not
/// count.
pub fn unread_by_redis(port: u16, pid: u32) -> usize {
    const LOOPBACK: &str = "0100007F";
    let ours = socket_inodes(pid);
    let sockets = tcp_sockets();
    let our_ports: HashSet<u16> = sockets
        .iter()
        .filter(|socket| {
            socket.remote == (LOOPBACK.to_owned(), port) && ours.contains(&socket.inode)
        })
        .map(|socket| socket.local.1)
        .collect();
    sockets
        .iter()
        .filter(|socket| {
            socket.established
                && socket.local == (LOOPBACK.to_owned(), port)
                && socket.remote.0 == LOOPBACK
                && our_ports.contains(&socket.remote.1)
        })
        .map(|socket| socket.unread)
        .sum()
}

/// A CLIENT LIST line's `name=value` field (empty when absent).
pub fn client_field(line: &str, name: &str) -> String {
    line.split(' ')
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_default()
        .to_owned()
}

/// Ids, in a CLIENT LIST, of the near cache's tracking readers (flag `t`) and of the
/// subscribers they redirect their invalidations to.
pub fn near_cache_client_ids(client_list: &str) -> Vec<String> {
    client_list
        .lines()
        .filter(|line| client_field(line, "flags").contains('t'))
        .flat_map(|line| [client_field(line, "id"), client_field(line, "redir")])
        .collect()
}

/// The pub/sub connections in a CLIENT LIST other than the near cache's subscriber.
pub fn pubsub_clients_besides_near_cache(client_list: &str) -> usize {
    let near_cache = near_cache_client_ids(client_list);
    client_list
        .lines()
        .filter(|line| !line.contains(" sub=0 ") && !near_cache.contains(&client_field(line, "id")))
        .count()
}
