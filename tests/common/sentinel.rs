//! A real Redis Sentinel group for tests: one primary, one replica and three sentinels, each a
//! child process on free loopback ports, the sentinels monitoring the primary as
//! [`SERVICE`] with a quorum of two and a one-second down-after. Dropping it kills every
//! process and removes their files, also when a test failed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::cli_as;
use super::tls::{ADMIN_PASSWORD, GATEWAY_PASSWORD, GATEWAY_USER, SENTINEL_PASSWORD, TlsFiles};
use super::{RedisServer, free_port};

/// The name the sentinels monitor the primary under.
pub const SERVICE: &str = "gateway-test";

/// One primary, one replica, three sentinels.
pub struct RedisSentinels {
    /// The primary at start, then the replica (which one is primary changes on failover).
    pub servers: Vec<RedisServer>,
    /// The sentinel processes and their ports.
    sentinels: Vec<Sentinel>,
    /// Whether the group is secured (TLS everywhere, ACL users, a sentinel password; see
    /// [`super::tls`]).
    secured: bool,
    /// The sentinels' configuration files (they rewrite them); removed on drop.
    _dir: tempfile::TempDir,
}

impl RedisSentinels {
    /// Starts the primary, the replica (in sync before this returns) and three sentinels
    /// (each seeing the replica and the other sentinels before this returns).
    pub fn start() -> Self {
        Self::start_configured(false)
    }

    /// As [`RedisSentinels::start`], secured: the gateway reaches sentinels and servers over
    /// TLS, logs in to the servers as its ACL user and to the sentinels with their password;
    /// replication and the sentinels' own links use TLS too.
    pub fn start_secured() -> Self {
        Self::start_configured(true)
    }

    fn start_configured(secured: bool) -> Self {
        let server = |extra: &[&str]| {
            if secured {
                let mut args = vec!["--tls-replication", "yes", "--masterauth", ADMIN_PASSWORD];
                args.extend_from_slice(extra);
                RedisServer::start_secured(&args)
            } else {
                RedisServer::start_with(extra)
            }
        };
        let primary = server(&[]);
        let primary_port = primary.tls_port.unwrap_or(primary.port).to_string();
        let replica = server(&["--replicaof", "127.0.0.1", &primary_port]);
        let admin = secured.then_some(ADMIN_PASSWORD);
        wait_for(Duration::from_secs(20), "the replica to sync", || {
            cli_as(replica.port, admin, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let sentinels = (0..3)
            .map(|index| {
                spawn_sentinel(
                    dir.path(),
                    index,
                    primary.tls_port.unwrap_or(primary.port),
                    secured,
                )
            })
            .collect::<Vec<_>>();
        let group = Self {
            servers: vec![primary, replica],
            sentinels,
            secured,
            _dir: dir,
        };
        wait_for(
            Duration::from_secs(30),
            "the sentinels to see each other and the replica",
            || {
                group.sentinels.iter().all(|sentinel| {
                    let state = group.sentinel_cli(sentinel.port, &["SENTINEL", "MASTER", SERVICE]);
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

    /// `redis-sentinel://` URL naming every sentinel; for a secured group
    /// `rediss-sentinel://` with the gateway's user, the sentinels' TLS ports and password.
    pub fn url(&self) -> String {
        let port_of = |sentinel: &Sentinel| sentinel.tls_port.unwrap_or(sentinel.port);
        let mut ports = self.sentinels.iter().map(port_of);
        let first = ports.next().expect("sentinels");
        let rest: Vec<String> = ports.map(|port| format!("node=127.0.0.1:{port}")).collect();
        if self.secured {
            format!(
                "rediss-sentinel://{GATEWAY_USER}:{GATEWAY_PASSWORD}@127.0.0.1:{first}/0?\
                 sentinelServiceName={SERVICE}&sentinelPassword={SENTINEL_PASSWORD}&{}",
                rest.join("&")
            )
        } else {
            format!(
                "redis-sentinel://127.0.0.1:{first}/0?sentinelServiceName={SERVICE}&{}",
                rest.join("&")
            )
        }
    }

    /// The sentinels' TLS ports, as `127.0.0.1:port` (a secured group).
    pub fn tls_nodes(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.tls_port.expect("secured")))
            .collect()
    }

    /// `redis-cli` on a sentinel's plain port (with the sentinel password when secured).
    fn sentinel_cli(&self, port: u16, args: &[&str]) -> String {
        cli_as(port, self.secured.then_some(SENTINEL_PASSWORD), args)
    }

    /// The port the sentinels name as the primary now (its TLS port when secured).
    pub fn primary_port(&self) -> u16 {
        let reply = self.sentinel_cli(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE],
        );
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
            .find(|server| server.port == port || server.tls_port == Some(port))
            .expect("one of the group's servers")
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for sentinel in &mut self.sentinels {
            let _ = sentinel.child.kill();
            let _ = sentinel.child.wait();
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

/// One sentinel process.
struct Sentinel {
    /// Its plain port (the fixtures').
    port: u16,
    /// Its TLS port, when secured.
    tls_port: Option<u16>,
    child: Child,
}

/// Starts sentinel `index` monitoring the primary on `primary_port`; retries other ports when
/// the chosen one was taken meanwhile.
fn spawn_sentinel(
    dir: &std::path::Path,
    index: usize,
    primary_port: u16,
    secured: bool,
) -> Sentinel {
    for _ in 0..10 {
        let port = free_port();
        let tls_port = secured.then(free_port);
        let config = dir.join(format!("sentinel-{index}.conf"));
        let mut text = format!("port {port}\nbind 127.0.0.1\ndir {}\n", dir.display());
        if let Some(tls_port) = tls_port {
            let tls = TlsFiles::shared();
            text.push_str(&format!(
                "tls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\n\
                 tls-ca-cert-file {}\ntls-auth-clients optional\ntls-replication yes\n\
                 requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n",
                tls.server_cert.display(),
                tls.server_key.display(),
                tls.ca.display(),
            ));
        }
        text.push_str(&format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n"
        ));
        if secured {
            text.push_str(&format!("sentinel auth-pass {SERVICE} {ADMIN_PASSWORD}\n"));
        }
        std::fs::write(&config, text).expect("write the sentinel configuration");
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
        let password = secured.then_some(SENTINEL_PASSWORD);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            if cli_as(port, password, &["PING"]).trim() == "PONG" {
                return Sentinel {
                    port,
                    tls_port,
                    child,
                };
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
