//! Test fixtures: private `redis-server` processes on free loopback ports (never 6379, never a
//! Redis the tests did not start), the gateway in-process on 127.0.0.1:0, and typed clients.
//!
//! - [`shared_redis`]: one redis-server per test binary, shared by its tests; tests keep apart
//!   by using [`unique_key`] names.
//! - [`RedisServer::start`]: a private one a test may stop and restart (fault tests).
//! - [`Gateway::start`]: the gateway over a given Redis URL.
#![allow(dead_code)]

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

/// A loopback port that was free a moment ago.
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
    /// Its working directory.
    dir: tempfile::TempDir,
    /// The running process, if any.
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a private redis-server on a free port and waits until it answers.
    pub fn start() -> Self {
        let server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: Mutex::new(None),
        };
        server.launch();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn launch(&self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe. The server dies with the thread that started it
        // (at the latest when the test process exits), so no redis-server outlives the tests.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().expect(
            "cannot start redis-server: install it (apt-get install -y redis-server) or run `make test`",
        );
        *self.child.lock().unwrap() = Some(child);
        self.wait_until_answering();
    }

    fn wait_until_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
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
        self.launch();
    }

    /// A direct fred client to this server, for setting up and checking state.
    pub async fn client(&self) -> Client {
        let config = fred::types::config::Config::from_url(&self.url()).unwrap();
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

/// The redis-server shared by the tests of one test binary.
///
/// It is started from a thread that lives as long as the process, so the parent-death signal
/// stops it when the test binary exits.
pub fn shared_redis() -> &'static RedisServer {
    static SHARED: OnceLock<&'static RedisServer> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let server: &'static RedisServer = Box::leak(Box::new(RedisServer::start()));
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
    /// Cancel to shut it down.
    pub shutdown: CancellationToken,
    /// The server task; resolves when it has stopped.
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Gateway {
    /// Starts the gateway over `redis_url` with extra command-line `args`, and waits until
    /// health reports SERVING.
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
        let mut argv = vec!["redis-gateway", "--redis-url", redis_url];
        // Test defaults, unless the test sets them itself.
        for (flag, value) in [
            ("--health-interval", "100ms"),
            ("--redis-connect-timeout", "1s"),
        ] {
            if !args.contains(&flag) {
                argv.extend([flag, value]);
            }
        }
        argv.extend_from_slice(args);
        let config = Config::parse_from(argv);
        config.validate().expect("test configuration is valid");
        // As the binary does: SO_REUSEPORT, so further runtimes get their own sockets.
        let listener = server::bind(([127, 0, 0, 1], 0).into())
            .and_then(tokio::net::TcpListener::from_std)
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::run(config, listener, shutdown.clone()));
        Self {
            addr,
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

/// A request with a gRPC deadline.
pub fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// A protobuf Duration.
pub fn duration(timeout: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: timeout.as_secs() as i64,
        nanos: timeout.subsec_nanos() as i32,
    }
}
