//! A real Redis Cluster for tests: three primaries and three replicas, each a redis-server
//! child on free loopback ports (client and cluster bus), joined by
//! `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes` and waited for until
//! every node reports `cluster_state:ok` and every replica is in sync. Dropping it kills every
//! node and removes their files, also when a test failed (each node is a [`RedisServer`]).

use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;

use super::tls::{ADMIN_PASSWORD, GATEWAY_PASSWORD, GATEWAY_USER, TlsFiles};
use super::{RedisServer, free_port};

/// Nodes of the test cluster: primaries first, then one replica each.
const PRIMARIES: usize = 3;

/// Three primaries and three replicas.
pub struct RedisCluster {
    /// Every node; which are primaries changes with failovers (see [`RedisCluster::role`]).
    pub nodes: Vec<RedisServer>,
    /// Whether the nodes are secured (TLS between clients, nodes and replicas, and ACL users;
    /// see [`super::tls`]).
    secured: bool,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until it serves every slot with every
    /// replica in sync.
    pub fn start() -> Self {
        Self::start_configured(false)
    }

    /// As [`RedisCluster::start`], secured: clients, the cluster bus and replication use TLS,
    /// and the gateway logs in as its ACL user.
    pub fn start_secured() -> Self {
        Self::start_configured(true)
    }

    fn start_configured(secured: bool) -> Self {
        let nodes: Vec<RedisServer> = (0..PRIMARIES * 2).map(|_| start_node(secured)).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.tls_port.unwrap_or(node.port)))
            .collect();
        let mut create = Command::new("redis-cli");
        if secured {
            create.args(TlsFiles::shared().cli_args()).args([
                "-a",
                ADMIN_PASSWORD,
                "--no-auth-warning",
            ]);
        }
        let output = create
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create (apt-get install -y redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes, secured };
        cluster.wait_until_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` and knows all six, and
    /// every replica's link to its primary is up.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ready = self
                .nodes
                .iter()
                .filter(|node| node.is_running())
                .all(|node| {
                    let cluster = self.cli(node.port, &["CLUSTER", "INFO"]);
                    let replication = self.cli(node.port, &["INFO", "replication"]);
                    cluster.contains("cluster_state:ok")
                        && cluster.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
                        && (replication.contains("role:master")
                            || replication.contains("master_link_status:up"))
                });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster was not ready within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis-cluster://` URL naming every node as a seed; for a secured cluster
    /// `rediss-cluster://` with the gateway's user and the TLS ports.
    pub fn url(&self) -> String {
        if self.secured {
            let seeds = self.seeds(|node| node.tls_port.expect("a TLS port"));
            format!("rediss-cluster://{GATEWAY_USER}:{GATEWAY_PASSWORD}@{seeds}")
        } else {
            format!("redis-cluster://{}", self.seeds(|node| node.port))
        }
    }

    /// `host:port?node=host:port&...` of every node, on the port `port_of` picks.
    fn seeds(&self, port_of: impl Fn(&RedisServer) -> u16) -> String {
        let mut nodes = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", port_of(node)));
        let first = nodes.next().expect("nodes");
        let rest: Vec<String> = nodes.map(|node| format!("node={node}")).collect();
        format!("{first}?{}", rest.join("&"))
    }

    /// The TLS ports of a secured cluster's nodes, as `127.0.0.1:port`.
    pub fn tls_nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.tls_port.expect("a secured cluster")))
            .collect()
    }

    /// `redis-cli` on a node's plain port, as the `default` user of a secured cluster.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let password = self.secured.then_some(ADMIN_PASSWORD);
        cli_as(port, password, args)
    }

    /// A direct cluster client (on the plain ports, as the `default` user of a secured
    /// cluster), for setting up and checking state.
    pub async fn client(&self) -> Client {
        let url = if self.secured {
            format!(
                "redis-cluster://:{ADMIN_PASSWORD}@{}",
                self.seeds(|node| node.port)
            )
        } else {
            self.url()
        };
        let config = fred::types::config::Config::from_url(&url).expect("cluster URL");
        let client = Builder::from_config(config)
            .build()
            .expect("cluster client");
        client.init().await.expect("connect to the cluster");
        client
    }

    /// Adds a seventh (eighth, ...) node as an empty primary (`redis-cli --cluster add-node`)
    /// and waits until every node knows it; returns its index.
    pub fn add_primary(&mut self) -> usize {
        assert!(!self.secured, "add_primary serves plain clusters");
        let node = start_node(false);
        let existing = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .expect("a running node");
        let output = Command::new("redis-cli")
            .args(["--cluster", "add-node"])
            .arg(format!("127.0.0.1:{}", node.port))
            .arg(format!("127.0.0.1:{}", existing.port))
            .output()
            .expect("run redis-cli --cluster add-node");
        assert!(
            output.status.success(),
            "redis-cli --cluster add-node failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.nodes.push(node);
        self.wait_until_ok(Duration::from_secs(30));
        self.nodes.len() - 1
    }

    /// Moves `slots` slots from the primary at `from` to the one at `to` with `redis-cli
    /// --cluster reshard` (keys migrate with them, while clients keep using the cluster).
    pub fn reshard(&self, from: usize, to: usize, slots: usize) {
        let id = |index: usize| self.cli(self.nodes[index].port, &["CLUSTER", "MYID"]);
        let output = Command::new("redis-cli")
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", self.nodes[from].port))
            .args(["--cluster-from", id(from).trim()])
            .args(["--cluster-to", id(to).trim()])
            .args(["--cluster-slots", &slots.to_string()])
            .arg("--cluster-yes")
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            output.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.wait_until_ok(Duration::from_secs(30));
    }

    /// The index of the replica of the primary at `primary` (by CLUSTER NODES).
    pub fn replica_of(&self, primary: usize) -> usize {
        let id = self.cli(self.nodes[primary].port, &["CLUSTER", "MYID"]);
        let nodes = self.cli(self.nodes[primary].port, &["CLUSTER", "NODES"]);
        let port = nodes
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|fields| fields.len() > 3 && fields[3] == id.trim())
            .and_then(|fields| {
                let address = fields[1].split('@').next()?;
                address.rsplit_once(':')?.1.parse::<u16>().ok()
            })
            .expect("the primary has a replica");
        self.nodes
            .iter()
            .position(|node| node.port == port)
            .expect("the replica is one of the nodes")
    }

    /// The role (`master` or `slave`) node `index` reports.
    pub fn role(&self, index: usize) -> String {
        let replication = self.cli(self.nodes[index].port, &["INFO", "replication"]);
        replication
            .lines()
            .find_map(|line| line.strip_prefix("role:"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// For every slot, the index of the node serving it as primary, as a running node sees it
    /// (one CLUSTER NODES).
    pub fn slot_owners(&self) -> Vec<Option<usize>> {
        let asked = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .expect("a running node");
        let nodes = self.cli(asked.port, &["CLUSTER", "NODES"]);
        let mut owners = vec![None; 16384];
        for fields in nodes
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
        {
            if fields.len() <= 8 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let Some(port) = fields[1]
                .split('@')
                .next()
                .and_then(|address| address.rsplit_once(':'))
                .and_then(|(_, port)| port.parse::<u16>().ok())
            else {
                continue;
            };
            let index = self
                .nodes
                .iter()
                .position(|node| node.port == port || node.tls_port == Some(port));
            for range in &fields[8..] {
                for (slot, owner) in owners.iter_mut().enumerate() {
                    if slot_in(range, slot as u16) {
                        *owner = index;
                    }
                }
            }
        }
        owners
    }

    /// The index of the node serving `key`'s slot as primary, as a running node sees it.
    pub fn primary_of(&self, key: &str) -> usize {
        let asked = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .expect("a running node");
        let slot: u16 = self
            .cli(asked.port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        // CLUSTER NODES: `<id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link>
        // <slot ranges...>`.
        let nodes = self.cli(asked.port, &["CLUSTER", "NODES"]);
        let port = nodes
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|fields| {
                fields.len() > 8
                    && fields[2].contains("master")
                    && !fields[2].contains("fail")
                    && fields[8..].iter().any(|range| slot_in(range, slot))
            })
            .and_then(|fields| {
                let address = fields[1].split('@').next()?;
                address.rsplit_once(':')?.1.parse::<u16>().ok()
            })
            .expect("a primary serves every slot");
        self.nodes
            .iter()
            .position(|node| node.port == port || node.tls_port == Some(port))
            .expect("the primary is one of the nodes")
    }
}

/// Starts one cluster-enabled node (not yet part of a cluster).
fn start_node(secured: bool) -> RedisServer {
    let bus = free_port().to_string();
    let mut args = vec![
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        &bus,
        "--cluster-node-timeout",
        "2000",
    ];
    if secured {
        args.extend([
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
            "--masterauth",
            ADMIN_PASSWORD,
        ]);
        RedisServer::start_secured(&args)
    } else {
        RedisServer::start_with(&args)
    }
}

/// Whether `slot` lies in a CLUSTER NODES slot range such as `0-5460` or `5461`.
fn slot_in(range: &str, slot: u16) -> bool {
    match range.split_once('-') {
        Some((low, high)) => match (low.parse::<u16>(), high.parse::<u16>()) {
            (Ok(low), Ok(high)) => (low..=high).contains(&slot),
            _ => false,
        },
        None => range.parse::<u16>().ok() == Some(slot),
    }
}

/// `redis-cli -p <port> <args>`'s output (empty when it fails).
pub fn cli(port: u16, args: &[&str]) -> String {
    cli_as(port, None, args)
}

/// `redis-cli -p <port> [-a <password>] <args>`'s output (empty when it fails).
pub fn cli_as(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    if let Some(password) = password {
        command.args(["-a", password, "--no-auth-warning"]);
    }
    command
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}
