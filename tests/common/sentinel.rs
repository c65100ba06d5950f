//! A real Redis Sentinel group for tests: one primary, one replica and three sentinels, each a
//! child process on free loopback ports, the sentinels monitoring the primary as
//! [`SERVICE`] with a quorum of two and a one-second down-after. Dropping it kills every
//! process and removes their files, also when a test failed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::cli;
use super::{RedisServer, free_port};

/// The name the sentinels monitor the primary under.
pub const SERVICE: &str = "gateway-test";

/// One primary, one replica, three sentinels.
pub struct RedisSentinels {
    /// The primary at start, then the replica (which one is primary changes on failover).
    pub servers: Vec<RedisServer>,
    /// The sentinel processes and their ports.
    sentinels: Vec<(u16, Child)>,
    /// The sentinels' configuration files (they rewrite them); removed on drop.
    _dir: tempfile::TempDir,
}

impl RedisSentinels {
    /// Starts the primary, the replica (in sync before this returns) and three sentinels
    /// (each seeing the replica and the other sentinels before this returns).
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        wait_for(Duration::from_secs(20), "the replica to sync", || {
            cli(replica.port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let sentinels = (0..3)
            .map(|index| spawn_sentinel(dir.path(), index, primary.port))
            .collect::<Vec<_>>();
        let group = Self {
            servers: vec![primary, replica],
            sentinels,
            _dir: dir,
        };
        wait_for(
            Duration::from_secs(30),
            "the sentinels to see each other and the replica",
            || {
                group.sentinels.iter().all(|(port, _)| {
                    let state = cli(*port, &["SENTINEL", "MASTER", SERVICE]);
                    let lines: Vec<&str> = state.lines().collect();
                    let field = |name: &str| {
                        lines
                            .iter()
                            .position(|line| *line == name)
                            .and_then(|index| lines.get(index + 1))
                            .map(|value| value.to_string())
                            .unwrap_or_default()
                    };
                    field("num-slaves") == "1" && field("num-other-sentinels") == "2"
                })
            },
        );
        group
    }

    /// `redis-sentinel://` URL naming every sentinel.
    pub fn url(&self) -> String {
        let mut ports = self.sentinels.iter().map(|(port, _)| *port);
        let first = ports.next().expect("sentinels");
        let rest: Vec<String> = ports.map(|port| format!("node=127.0.0.1:{port}")).collect();
        format!(
            "redis-sentinel://127.0.0.1:{first}/0?sentinelServiceName={SERVICE}&{}",
            rest.join("&")
        )
    }

    /// The port the sentinels name as the primary now.
    pub fn primary_port(&self) -> u16 {
        let (port, _) = &self.sentinels[0];
        let reply = cli(*port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE]);
        reply
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .expect("the sentinels name a primary")
    }

    /// The server process listening on `port`.
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .find(|server| server.port == port)
            .expect("one of the group's servers")
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `ready` every 100 ms until it holds, failing after `within`.
pub fn wait_for(within: Duration, what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts sentinel `index` monitoring the primary on `primary_port`; retries other ports when
/// the chosen one was taken meanwhile.
fn spawn_sentinel(dir: &std::path::Path, index: usize, primary_port: u16) -> (u16, Child) {
    for _ in 0..10 {
        let port = free_port();
        let config = dir.join(format!("sentinel-{index}.conf"));
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 5000\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                dir = dir.display()
            ),
        )
        .expect("write the sentinel configuration");
        let mut command = Command::new("redis-server");
        command
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        super::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .expect("cannot start redis-server --sentinel (apt-get install -y redis-server)");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            if cli(port, &["PING"]).trim() == "PONG" {
                return (port, child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no sentinel started");
}
