//! The gateway process: graceful shutdown on SIGTERM, streams that end themselves on drain,
//! invalid configuration (exit code 2 naming the setting), and the embedded redis-server.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{spawn_gateway, start_gateway_process, strip_ansi};
use common::{Gateway, RedisServer, free_port, shared_redis, unique_key, wait_for_held_commands};
use fred::prelude::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tonic::Code;
use tonic::transport::Channel;

/// Connects to a gateway process, retrying while it starts.
async fn connect(port: u16) -> Channel {
    common::connect_channel(([127, 0, 0, 1], port).into(), Duration::from_secs(20)).await
}

/// Waits until the gateway behind `channel` reports SERVING.
async fn wait_until_serving(channel: Channel) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mut health = HealthClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|reply| reply.into_inner().status());
        if status.as_ref().ok() == Some(&ServingStatus::Serving) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never served: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the binary (listening on a free port) to completion; returns its exit code and stderr.
async fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let mut argv = vec!["--listen", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let child = spawn_gateway(&argv, envs);
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the gateway exits by itself")
        .expect("wait for the gateway");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn sigterm(child: &Child) {
    let pid = Pid::from_raw(child.id().expect("running") as i32);
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_without_waiting_for_the_drain() {
    let redis = RedisServer::start();
    let mut gateway = start_gateway_process(
        &[
            "--redis-url",
            &redis.url(),
            "--drain-timeout",
            "60s",
            "--redis-command-timeout",
            "60s",
        ],
        &[],
    )
    .await;
    let mut kv = KeyValueClient::new(connect(gateway.addr.port()).await);
    let key = unique_key("second-signal");
    kv.get(pb::KeyValueGetRequest {
        key: key.clone(),
        ..Default::default()
    })
    .await
    .expect("the gateway serves");

    // A call held in a stopped Redis keeps the drain waiting (its timeouts are a minute).
    redis.suspend();
    let held = tokio::spawn(async move {
        kv.get(pb::KeyValueGetRequest {
            key,
            ..Default::default()
        })
        .await
    });
    let gateway_pid = gateway.child.id().expect("running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::unread_by_redis(redis.port, gateway_pid) == 0 {
        assert!(Instant::now() < deadline, "the call never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    sigterm(&gateway.child);
    let drained_early =
        tokio::time::timeout(Duration::from_millis(500), gateway.child.wait()).await;
    assert!(
        drained_early.is_err(),
        "the drain did not wait for the held call"
    );
    let second = Instant::now();
    let pid = Pid::from_raw(gateway_pid as i32);
    kill(pid, Signal::SIGINT).expect("send SIGINT");
    let status = tokio::time::timeout(Duration::from_secs(5), gateway.child.wait())
        .await
        .expect("the second signal ends the process at once")
        .unwrap();
    assert!(second.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{status:?}");
    redis.resume();
    let _ = held.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_calls_finish_then_exits_zero() {
    let redis = RedisServer::start();
    let admin = redis.client().await;
    let mut gateway = start_gateway_process(
        // One Redis connection per held call, so each shows as blocked in CLIENT LIST.
        &[
            "--redis-url",
            &redis.url(),
            "--drain-timeout",
            "30s",
            "--runtimes",
            "1",
            "--redis-max-connections",
            "5",
        ],
        &[],
    )
    .await;
    let kv = KeyValueClient::new(connect(gateway.addr.port()).await);
    let key = unique_key("drain");
    kv.clone()
        .set(pb::KeyValueSetRequest {
            key: key.clone(),
            value: Bytes::from_static(b"0"),
            ..Default::default()
        })
        .await
        .expect("gateway serves");

    // Hold writes inside Redis until the UNPAUSE below, so the increments are in flight at
    // SIGTERM. Each goes to its own pooled connection (round robin over 8).
    let _: () = admin
        .custom(fred::cmd!("CLIENT"), vec!["PAUSE", "60000", "WRITE"])
        .await
        .unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut kv = kv.clone();
            let key = key.clone();
            tokio::spawn(async move {
                kv.increment(pb::KeyValueIncrementRequest {
                    key,
                    delta: 1,
                    ttl: None,
                })
                .await
            })
        })
        .collect();
    wait_for_held_commands(&admin, "incrby", 5, Duration::from_secs(20)).await;
    sigterm(&gateway.child);

    // New connections are refused while draining: the listener closes soon after the signal,
    // while the increments are still held.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "new connections were still accepted 10 s into the drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        calls.iter().all(|call| !call.is_finished()),
        "a held call finished before Redis resumed"
    );
    assert!(
        gateway.child.try_wait().unwrap().is_none(),
        "the gateway exited with calls in flight"
    );

    let _: () = admin
        .custom(fred::cmd!("CLIENT"), vec!["UNPAUSE"])
        .await
        .unwrap();
    for call in calls {
        call.await
            .unwrap()
            .expect("in-flight call completes during the drain");
    }
    let status = tokio::time::timeout(Duration::from_secs(20), gateway.child.wait())
        .await
        .expect("the gateway exits once the calls are done")
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let counter: i64 = admin.get(&key).await.unwrap();
    assert_eq!(counter, 5, "every in-flight increment was applied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_streams_end_when_the_server_drains() {
    let redis = shared_redis();
    let admin = redis.client().await;
    let prefix = unique_key("drainscan");
    // More pages than HTTP/2 flow control lets the server buffer for a client that stops
    // reading, so the scan is still running at shutdown.
    let keys: Vec<(String, &str)> = (0..5000)
        .map(|index| (format!("{prefix}:{index}"), "x"))
        .collect();
    let _: () = admin.mset(keys).await.unwrap();
    let gateway = Gateway::start(&redis.url(), &["--drain-timeout", "10s"]).await;
    let mut kv = gateway.kv().await;
    let mut pages = kv
        .scan(pb::KeyValueScanRequest {
            pattern: format!("{prefix}:*"),
            page_size: 1,
            r#type: String::new(),
        })
        .await
        .expect("scan starts")
        .into_inner();
    let first = pages.message().await.expect("first page").expect("a page");
    assert_eq!(first.keys.len(), 1);

    // The client stops reading; the server must end the stream itself when draining.
    let started = Instant::now();
    gateway.shutdown.cancel();
    let mut ended_with = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), pages.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                ended_with = Some(status);
                break;
            }
            Err(_) => panic!("the scan stream did not end after shutdown"),
        }
    }
    let status = ended_with.expect("the stream ends with a status saying why");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    gateway.stop().await.expect("the server stops cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain took too long"
    );
}

#[tokio::test]
async fn invalid_configuration_exits_2_naming_the_setting() {
    /// Command-line arguments, environment, and the setting the error must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&[], &[("REDIS_PORT", "not-a-port")], "REDIS_PORT"),
        (&[], &[("REDIS_URL", "http://nowhere")], "REDIS_URL"),
        (
            &["--max-value-bytes", "8MiB", "--max-request-bytes", "4MiB"],
            &[],
            "GATEWAY_MAX_REQUEST_BYTES",
        ),
        (&[], &[("GATEWAY_MAX_TTL", "0s")], "GATEWAY_MAX_TTL"),
        (
            &["--embedded-redis"],
            &[("REDIS_URL", "redis://127.0.0.1:1")],
            "GATEWAY_EMBEDDED_REDIS",
        ),
        (
            &[],
            &[("REDIS_MAX_CONNECTIONS", "0")],
            "REDIS_MAX_CONNECTIONS",
        ),
        (
            &[],
            &[("GATEWAY_MAX_BATCH_ITEMS", "5000")],
            "GATEWAY_MAX_BATCH_ITEMS",
        ),
        (
            &[],
            &[("GATEWAY_METRICS_LISTEN", "localhost:9464")],
            "GATEWAY_METRICS_LISTEN",
        ),
    ];
    for (args, envs, setting) in cases {
        let (code, stderr) = run_to_exit(args, envs).await;
        assert_eq!(code, 2, "{setting}: exit code {code}, stderr: {stderr}");
        assert!(
            stderr.contains(setting),
            "{setting} is not named in: {stderr}"
        );
    }
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let redis = RedisServer::start();
    let url = format!("redis://nobody:hunter2-url@127.0.0.1:{}", redis.port);
    let mut gateway = start_gateway_process(
        &["--redis-connect-timeout", "300ms"],
        &[("REDIS_URL", &url), ("REDIS_PASSWORD", "hunter2-env")],
    )
    .await;
    sigterm(&gateway.child);
    let stderr = gateway
        .log
        .into_lines(Duration::from_secs(20))
        .await
        .join("\n");
    gateway.child.wait().await.unwrap();
    assert!(stderr.contains("connecting to Redis"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "a secret was logged: {stderr}");
}

#[tokio::test]
async fn embedded_mode_explains_how_to_install_a_missing_redis_server() {
    let (code, stderr) = run_to_exit(
        &["--embedded-redis"],
        &[("GATEWAY_REDIS_SERVER_BIN", "/nonexistent/redis-server")],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("apt-get install"), "{stderr}");
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
}

/// The gateway binary with an embedded Redis in `data_dir`; its log is read in the background
/// (so its stderr pipe never fills up) and kept for assertions and failure messages.
struct EmbeddedGateway {
    child: Child,
    /// Where it serves gRPC.
    port: u16,
    /// Log lines (ANSI colours stripped) as they come.
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every line received so far.
    seen: Vec<String>,
}

impl EmbeddedGateway {
    fn spawn(data_dir: &Path) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = spawn_gateway(
            &[
                "--listen",
                &listen,
                "--embedded-redis",
                "--embedded-redis-dir",
                data_dir.to_str().unwrap(),
                "--health-interval",
                "100ms",
            ],
            &[],
        );
        let (sender, log) = tokio::sync::mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = sender.send(strip_ansi(&line));
            }
        });
        Self {
            child,
            port,
            log,
            seen: Vec::new(),
        }
    }

    /// Waits (generously: the machine may be loaded) for a new log line containing `needle`.
    async fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, self.log.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "the gateway exited before logging {needle:?}: {:#?}",
                    self.seen
                ),
                Err(_) => panic!("the gateway never logged {needle:?}: {:#?}", self.seen),
            }
        }
    }

    /// SIGTERMs the gateway, asserts that it exits 0, and returns its whole log.
    async fn stop(mut self) -> Vec<String> {
        sigterm(&self.child);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the gateway exits")
            .unwrap();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(10), self.log.recv()).await
        {
            self.seen.push(line);
        }
        assert_eq!(status.code(), Some(0), "{:#?}", self.seen);
        self.seen
    }
}

/// The value of `name=` in a log line.
fn log_field<'a>(line: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// The embedded redis-server's pid, from its "is up" / "restarted" log lines.
fn embedded_pid(line: &str) -> i32 {
    log_field(line, "pid").parse().expect("a pid")
}

/// The parent pid of process `pid`, from /proc.
fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so parse after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The redis-server processes whose parent is `parent`, from /proc.
fn redis_children(parent: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| parent_pid(pid) == Some(parent as i32))
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "redis-server")
        })
        .collect()
}

/// True while process `pid` exists (and is not a zombie awaiting its parent).
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let rest = &stat[stat.rfind(')').map_or(0, |end| end + 1)..];
            rest.split_whitespace().next() != Some("Z")
        })
        .unwrap_or(false)
}

/// Every append-only file of the embedded Redis (Redis 7 keeps them in `appendonlydir/`).
fn append_only_bytes(data_dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(entries) = std::fs::read_dir(data_dir.join("appendonlydir")) {
        for entry in entries.flatten() {
            bytes.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Gets `key` through the gateway until it is found (the embedded Redis may be restarting).
async fn get_eventually(kv: &mut KeyValueClient<Channel>, key: &str) -> Bytes {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = kv
            .get(pb::KeyValueGetRequest {
                key: key.to_owned(),
                ..Default::default()
            })
            .await;
        match reply {
            Ok(reply) if reply.get_ref().found => return reply.into_inner().value,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the embedded Redis did not come back with {key}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_redis_survives_a_crash_with_its_data_and_stops_with_the_gateway() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("redis");
    let mut gateway = EmbeddedGateway::spawn(&data_dir);
    let up = gateway.wait_for_log("embedded redis-server is up").await;
    let first_pid = embedded_pid(&up);
    let socket = PathBuf::from(log_field(&up, "socket"));
    let channel = connect(gateway.port).await;
    wait_until_serving(channel.clone()).await;
    let mut kv = KeyValueClient::new(channel);

    let key = unique_key("persisted");
    let value = format!("kept-{key}");
    kv.set(pb::KeyValueSetRequest {
        key: key.clone(),
        value: Bytes::from(value.clone()),
        ..Default::default()
    })
    .await
    .expect("the embedded Redis serves");
    // The write reaches the append-only file right away (fsync, every second, only matters
    // for an OS crash): wait for it rather than for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !contains(&append_only_bytes(&data_dir), value.as_bytes()) {
        assert!(
            Instant::now() < deadline,
            "the key never reached the append-only files in {}",
            data_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(contains(&append_only_bytes(&data_dir), key.as_bytes()));

    // A real crash: SIGKILL, no chance to flush. Only ever the gateway's own child.
    assert_eq!(
        parent_pid(first_pid),
        Some(gateway.child.id().unwrap() as i32),
        "pid {first_pid} is not the gateway's child"
    );
    kill(Pid::from_raw(first_pid), Signal::SIGKILL).expect("kill the embedded Redis");
    let restarted = gateway
        .wait_for_log("embedded redis-server restarted")
        .await;
    let second_pid = embedded_pid(&restarted);
    assert_ne!(second_pid, first_pid);
    assert!(!process_alive(first_pid));

    // Served again, on the same socket, with the data from the append-only file.
    assert_eq!(get_eventually(&mut kv, &key).await, Bytes::from(value));
    assert!(socket.exists(), "{} is gone", socket.display());

    gateway.stop().await;
    assert!(
        !process_alive(second_pid),
        "the embedded Redis outlived the gateway"
    );
    assert!(
        !socket.exists(),
        "redis-server removes its socket on a clean stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_redis_is_reachable_only_by_the_gateway() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("redis");
    let mut gateway = EmbeddedGateway::spawn(&data_dir);
    let up = gateway.wait_for_log("embedded redis-server is up").await;
    wait_until_serving(connect(gateway.port).await).await;
    let children = redis_children(gateway.child.id().unwrap());
    let [pid] = children[..] else {
        panic!("the gateway runs one redis-server, not {children:?}");
    };

    // No TCP listener at all: none of the child's sockets is in the kernel's TCP tables,
    // while its unix socket is found the same way (so the check can see sockets).
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table_inodes = |table: &str| -> Vec<(String, String)> {
        std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|row| {
                let fields: Vec<&str> = row.split_whitespace().collect();
                let (inode, rest) = match table {
                    // Num RefCount Protocol Flags Type St Inode Path
                    "unix" => (fields.get(6)?, fields.get(7).copied().unwrap_or("")),
                    // sl local rem st queues tr retrnsmt uid timeout inode
                    _ => (fields.get(9)?, fields[1]),
                };
                Some((inode.to_string(), rest.to_owned()))
            })
            .collect()
    };
    for table in ["tcp", "tcp6"] {
        for (inode, local) in table_inodes(table) {
            assert!(
                !inodes.contains(&inode),
                "the embedded Redis has a TCP socket ({table} {local})"
            );
        }
    }

    // The socket lives in a directory only this user can enter, and is itself 0700.
    let socket = PathBuf::from(log_field(&up, "socket"));
    assert_eq!(embedded_pid(&up), pid);
    assert!(
        table_inodes("unix")
            .iter()
            .any(|(inode, path)| inodes.contains(inode) && Path::new(path) == socket),
        "the embedded Redis does not listen on {}",
        socket.display()
    );
    let run_dir = socket.parent().unwrap();
    let run_meta = std::fs::symlink_metadata(run_dir).unwrap();
    assert!(run_meta.is_dir());
    assert_eq!(run_meta.permissions().mode() & 0o7777, 0o700, "{run_dir:?}");
    assert_eq!(run_meta.uid(), nix::unistd::geteuid().as_raw());
    let socket_meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(socket_meta.permissions().mode() & 0o777, 0o700);

    // The password is in a file only this user can read, not on the command line.
    let config_file = run_dir.join("redis.conf");
    let config_meta = std::fs::metadata(&config_file).unwrap();
    assert_eq!(config_meta.permissions().mode() & 0o777, 0o600);
    let config = std::fs::read_to_string(&config_file).unwrap();
    let password = config
        .lines()
        .find_map(|line| line.strip_prefix("requirepass "))
        .expect("a password")
        .to_owned();
    assert!(password.len() >= 32);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!contains(&cmdline, password.as_bytes()));

    // Even on the socket, nothing runs without the password.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        stream
            .write_all(b"CONFIG SET dir /tmp\r\nPING\r\n")
            .await
            .unwrap();
        let mut reply = vec![0u8; 256];
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while reply[..read].iter().filter(|&&byte| byte == b'\n').count() < 2 {
            assert!(Instant::now() < deadline, "no reply");
            read += tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply[read..]))
                .await
                .expect("a reply")
                .unwrap();
        }
        let reply = String::from_utf8_lossy(&reply[..read]);
        assert!(
            reply.lines().all(|line| line.starts_with("-NOAUTH")),
            "{reply}"
        );
    }

    // A second gateway cannot start another redis-server on the same data.
    let (code, stderr) = run_to_exit(
        &[
            "--embedded-redis",
            "--embedded-redis-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("in use by another gateway"), "{stderr}");
    assert!(process_alive(pid), "the first embedded Redis was disturbed");

    let log = gateway.stop().await;
    assert!(
        !config_file.exists(),
        "the password file outlived the gateway"
    );
    assert!(
        log.iter()
            .any(|line| line.contains("embedded redis-server stopped")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|line| line.contains(&password)),
        "the password was logged"
    );
}

#[tokio::test]
async fn embedded_redis_output_cannot_block_it_and_a_failed_start_reports_it() {
    use std::os::unix::fs::PermissionsExt;

    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("redis");
    // More than a pipe holds (64 KiB), then a last word and a failure. If nobody read the
    // child's output, it would block on the write and the gateway would wait for a PING.
    let fake = data.path().join("fake-redis-server");
    std::fs::write(
        &fake,
        "#!/bin/sh\n\
         head -c 300000 /dev/zero | tr '\\0' x >&2\n\
         echo >&2\n\
         echo 'fake-redis-server: cannot start, see marker-7b1' >&2\n\
         exit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, stderr) = run_to_exit(
        &[
            "--embedded-redis",
            "--embedded-redis-dir",
            data_dir.to_str().unwrap(),
        ],
        &[("GATEWAY_REDIS_SERVER_BIN", fake.to_str().unwrap())],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("exited with"), "{stderr}");
    assert!(stderr.contains("marker-7b1"), "{stderr}");
    assert!(
        stderr.len() < 20_000,
        "the error repeats all of the output: {} bytes",
        stderr.len()
    );
    let log = std::fs::read_to_string(data_dir.join("redis.log")).unwrap();
    assert!(
        log.contains("marker-7b1"),
        "its output is kept in redis.log"
    );
    assert!(
        !data_dir.join("run").join("redis.conf").exists(),
        "the password file outlived a failed start"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_keeps_serving() {
    let gateway = Gateway::start(
        &shared_redis().url(),
        &["--max-value-bytes", "1KiB", "--max-request-bytes", "4KiB"],
    )
    .await;
    let mut kv = gateway.kv().await;
    let key = unique_key("oversized");
    let set = |size: usize| pb::KeyValueSetRequest {
        key: key.clone(),
        value: Bytes::from(vec![b'x'; size]),
        ..Default::default()
    };
    let too_big_value = kv.set(set(2048)).await.expect_err("value over the limit");
    assert_eq!(too_big_value.code(), Code::InvalidArgument);
    assert!(
        too_big_value.message().starts_with("value:"),
        "{too_big_value:?}"
    );
    let too_big_message = kv.set(set(8192)).await.expect_err("message over the limit");
    assert_eq!(
        too_big_message.code(),
        Code::OutOfRange,
        "{too_big_message:?}"
    );
    kv.set(set(1024))
        .await
        .expect("a value at the limit is accepted");
}

#[tokio::test]
async fn health_watchers_see_not_serving_and_do_not_hold_the_drain() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;

    let gateway = Gateway::start(&shared_redis().url(), &["--drain-timeout", "30s"]).await;
    let mut watch = gateway
        .health()
        .await
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch starts")
        .into_inner();
    let first = watch.message().await.unwrap().expect("a status");
    assert_eq!(first.status(), ServingStatus::Serving);

    let started = Instant::now();
    gateway.shutdown.cancel();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(update))) =
        tokio::time::timeout(Duration::from_secs(5), watch.message()).await
    {
        seen.push(update.status());
    }
    assert_eq!(seen.last(), Some(&ServingStatus::NotServing), "{seen:?}");
    gateway.stop().await.expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an open Watch held the drain for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn json_log_format_writes_one_object_per_line() {
    let mut gateway = start_gateway_process(
        &["--redis-url", &shared_redis().url()],
        &[("GATEWAY_LOG_FORMAT", "json")],
    )
    .await;
    wait_until_serving(connect(gateway.addr.port()).await).await;
    sigterm(&gateway.child);
    let logged = gateway.log.into_lines(Duration::from_secs(20)).await;
    gateway.child.wait().await.unwrap();
    assert!(logged.len() >= 3, "{logged:?}");
    for line in &logged {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains(r#""level":"INFO""#),
            "not a JSON log line: {line}"
        );
    }
    assert!(
        logged
            .iter()
            .any(|line| line.contains(r#""message":"serving gRPC""#)),
        "{logged:?}"
    );
}

/// A log reader that goes away (its pipe closed) costs log lines, not the gateway: it keeps
/// serving and still stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_neither_crashes_the_gateway_nor_deafens_it_to_signals() {
    let url = shared_redis().url();
    let mut gateway = start_gateway_process(&["--redis-url", &url], &[("RUST_LOG", "debug")]).await;
    let addr = gateway.addr;
    // Close the read end of its stderr: every log line from now on fails to write.
    drop(gateway.log);
    let mut kv = KeyValueClient::new(common::connect_channel(addr, Duration::from_secs(10)).await);
    for _ in 0..20 {
        kv.get(pb::KeyValueGetRequest {
            key: unique_key("closed-log"),
            ..Default::default()
        })
        .await
        .expect("serves with its log pipe closed");
    }
    sigterm(&gateway.child);
    let status = tokio::time::timeout(Duration::from_secs(15), gateway.child.wait())
        .await
        .expect("exits on SIGTERM")
        .expect("wait for the gateway");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Started with a soft limit of 128 open files, the gateway raises it to the hard limit, so
/// that 300 clients connected at once are all served (each connection is a file).
#[tokio::test]
async fn the_open_files_limit_is_raised_so_many_clients_are_served() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("read the limit");
    assert!(
        hard > 512,
        "this test needs a hard limit above 512 (it is {hard})"
    );
    let redis = shared_redis();
    let mut command = tokio::process::Command::new(common::process::BINARY);
    command
        .args(["--listen", "127.0.0.1:0", "--redis-url", &redis.url()])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs in the forked child.
    unsafe {
        command.pre_exec(move || {
            setrlimit(Resource::RLIMIT_NOFILE, 128, hard).map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().expect("start the gateway");
    let mut log = common::process::Log::capture(child.stderr.take().expect("stderr"));
    let line = log.wait_for("serving gRPC", Duration::from_secs(20)).await;
    let addr = common::process::logged_addr(&line).expect("address");
    let pid = child.id().expect("running");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("the open files line");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(
        numbers,
        [hard.to_string(), hard.to_string()],
        "{open_files}"
    );

    let mut clients = Vec::new();
    for _ in 0..300 {
        clients.push(KeyValueClient::new(connect(addr.port()).await));
    }
    let key = unique_key("many-clients");
    for client in &mut clients {
        client
            .get(pb::KeyValueGetRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .expect("every client is served");
    }
}

/// A second gateway on an address another one serves is refused (SO_REUSEPORT would let it
/// take part of the connections unseen), and the first keeps serving; once the first has
/// stopped, a gateway starts on the same address at once (its closed connections lingering in
/// TIME_WAIT do not block it).
#[tokio::test]
async fn a_second_gateway_on_a_served_address_is_refused_and_a_restart_is_not() {
    let redis = shared_redis();
    let mut first = start_gateway_process(&["--redis-url", &redis.url()], &[]).await;
    let addr = first.addr.to_string();
    let key = unique_key("second-gateway");
    let mut kv = KeyValueClient::new(connect(first.addr.port()).await);
    kv.get(pb::KeyValueGetRequest {
        key: key.clone(),
        ..Default::default()
    })
    .await
    .expect("the first gateway serves");

    let second = spawn_gateway(&["--listen", &addr, "--redis-url", &redis.url()], &[]);
    let output = tokio::time::timeout(Duration::from_secs(20), second.wait_with_output())
        .await
        .expect("the second gateway exits by itself")
        .expect("wait for it");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    for _ in 0..20 {
        KeyValueClient::new(connect(first.addr.port()).await)
            .get(pb::KeyValueGetRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .expect("every new connection reaches the first gateway");
    }

    sigterm(&first.child);
    first.child.wait().await.expect("the first gateway exits");
    drop(kv);
    let mut restarted = spawn_gateway(&["--listen", &addr, "--redis-url", &redis.url()], &[]);
    let mut log = common::process::Log::capture(restarted.stderr.take().expect("stderr is piped"));
    log.wait_for("serving gRPC", Duration::from_secs(20)).await;
    KeyValueClient::new(connect(first.addr.port()).await)
        .get(pb::KeyValueGetRequest {
            key,
            ..Default::default()
        })
        .await
        .expect("the restarted gateway serves on the same address");
}

/// SIGTERM under a steady load: every call the gateway accepted completes (each acknowledged
/// write is in Redis), calls after the listener closed are refused rather than cut off, a Hold
/// stream's lock is released, and the process exits 0 within the drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_steady_load_loses_no_accepted_call() {
    use redis_gateway::pb::lock_client::LockClient;
    use std::sync::{Arc, Mutex};
    let redis = RedisServer::start();
    let admin = redis.client().await;
    let mut gateway = start_gateway_process(
        &["--redis-url", &redis.url(), "--drain-timeout", "10s"],
        &[],
    )
    .await;
    let prefix = unique_key("drain-load");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let mut kv = KeyValueClient::new(connect(gateway.addr.port()).await);
        let (prefix, acknowledged, failures) =
            (prefix.clone(), acknowledged.clone(), failures.clone());
        writers.push(tokio::spawn(async move {
            let mut consecutive_failures = 0;
            for index in 0.. {
                let key = format!("{prefix}:{writer}:{index}");
                let request = pb::KeyValueSetRequest {
                    key: key.clone(),
                    value: Bytes::from_static(b"v"),
                    ..Default::default()
                };
                match kv.set(request).await {
                    Ok(_) => {
                        consecutive_failures = 0;
                        acknowledged.lock().unwrap().push(key);
                    }
                    Err(status) => {
                        failures.lock().unwrap().push((key, status));
                        consecutive_failures += 1;
                        if consecutive_failures == 3 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }
    let mut locks = LockClient::new(connect(gateway.addr.port()).await);
    let name = unique_key("drain-hold");
    let mut hold = locks
        .hold(pb::LockHoldRequest {
            name: name.clone(),
            ttl: Some(common::duration(Duration::from_secs(60))),
            ..Default::default()
        })
        .await
        .expect("Hold")
        .into_inner();
    hold.message().await.expect("stream").expect("acquired");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acknowledged.lock().unwrap().len();
    assert!(before > 0, "the load is running");

    sigterm(&gateway.child);
    let signalled = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(12), gateway.child.wait())
        .await
        .expect("the gateway exits within the drain timeout")
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let exited = signalled.elapsed();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("writers notice the gateway is gone")
            .unwrap();
    }

    // Every acknowledged write is in Redis.
    let acknowledged = acknowledged.lock().unwrap().clone();
    for chunk in acknowledged.chunks(500) {
        let found: i64 = admin.exists(chunk.to_vec()).await.unwrap();
        assert_eq!(
            found,
            chunk.len() as i64,
            "an acknowledged write is missing"
        );
    }
    // A call either completed or was refused before the gateway took it (its stream after
    // the drain's GOAWAY, or its connection closed): never cut off inside, so no failed call
    // was applied.
    let failures = failures.lock().unwrap().clone();
    for (key, status) in failures.iter() {
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Cancelled),
            "{status:?}"
        );
        let applied: i64 = admin.exists(key).await.unwrap();
        assert_eq!(
            applied, 0,
            "{key} was written but its call failed: {status:?}"
        );
    }
    // The held lock was released, not left to expire.
    let lock_keys: Vec<String> = admin
        .custom(fred::cmd!("KEYS"), vec![format!("__gw:lock:*{name}")])
        .await
        .unwrap();
    assert!(lock_keys.is_empty(), "{lock_keys:?}");
    println!(
        "drain under load: {} writes acknowledged ({} after SIGTERM), {} refused, exited {exited:?} after SIGTERM",
        acknowledged.len(),
        acknowledged.len() - before,
        failures.len()
    );
}
