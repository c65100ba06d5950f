//! Locks confirmed by a replica before they are granted (GATEWAY_LOCK_REPLICA_ACKS): with the
//! replica answering, a granted lock is already on it; with the replica frozen, an acquisition
//! is refused and released again, never granted; with the setting at 0 nothing waits; on a
//! Redis Cluster each lock waits for the replica of its own shard; and across a Sentinel
//! failover the fencing tokens keep rising.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{RedisCluster, cli};
use common::locks::{self, Locks};
use common::sentinel::{RedisSentinels, wait_for};
use common::{Gateway, RedisServer, unique_key};
use redis_gateway::pb;
use redis_gateway::pb::lock_client::LockClient;
use tonic::Code;

fn acquire_request(name: &str) -> pb::LockAcquireRequest {
    locks::acquire_request(name, Duration::from_secs(30), Duration::ZERO)
}

/// Acquires a fresh lock and tells whether `replica` already has it when the grant arrives.
async fn granted_on_replica(locks: &mut Locks, replica: &RedisServer, label: &str) -> bool {
    let name = unique_key(label);
    let granted = locks
        .acquire(acquire_request(&name))
        .await
        .expect("Acquire")
        .into_inner();
    assert!(granted.acquired);
    !cli(replica.port, &["KEYS", &format!("__gw:lock:*{name}")])
        .trim()
        .is_empty()
}

/// A primary and a replica in sync.
fn primary_and_replica() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    wait_for(Duration::from_secs(20), "the replica to sync", || {
        cli(replica.port, &["INFO", "replication"]).contains("master_link_status:up")
    });
    (primary, replica)
}

/// Waits until the gateway counts the replica (it reads INFO replication every second).
async fn until_confirmed_grants(locks: &mut Locks, replica: &RedisServer) {
    let started = Instant::now();
    loop {
        if granted_on_replica(locks, replica, "probe").await {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "grants never waited for the replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_granted_only_once_a_replica_has_it() {
    let (primary, replica) = primary_and_replica();
    let gateway = Gateway::start(&primary.url(), &["--lock-replica-timeout", "200ms"]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    until_confirmed_grants(&mut locks, &replica).await;

    // Every grant is on the replica the moment it is answered.
    for _ in 0..20 {
        let name = unique_key("synced");
        let granted = locks
            .acquire(acquire_request(&name))
            .await
            .expect("Acquire")
            .into_inner();
        assert!(granted.acquired);
        let on_replica = cli(replica.port, &["KEYS", &format!("__gw:lock:*{name}")]);
        assert!(
            !on_replica.trim().is_empty(),
            "{name} granted before the replica had it"
        );
    }

    // A frozen replica confirms nothing: the acquisition is refused and released again.
    replica.suspend();
    let name = unique_key("unconfirmed");
    let started = Instant::now();
    let status = locks
        .acquire(acquire_request(&name))
        .await
        .expect_err("no replica confirms it");
    let took = started.elapsed();
    replica.resume();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("replicas confirmed") && status.message().contains("released"),
        "{status:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        !locks::inspect(&mut locks, &name).await.held,
        "an unconfirmed lock stayed held"
    );
    // Once the replica answers again, grants resume.
    let granted = locks
        .acquire(acquire_request(&name))
        .await
        .expect("Acquire")
        .into_inner();
    assert!(granted.acquired);
}

/// The cluster node index serving lock `name`'s keys as primary.
fn shard_of_lock(owners: &[Option<usize>], name: &str) -> usize {
    let key = redis_gateway::redis::Namespace::default()
        .lock_keys(name)
        .lock;
    owners[usize::from(fred::util::redis_keyslot(key.as_bytes()))].expect("an owner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_each_lock_waits_for_the_replica_of_its_own_shard() {
    let cluster = RedisCluster::start();
    let gateway = Gateway::start(&cluster.url(), &["--lock-replica-timeout", "200ms"]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let owners = cluster.slot_owners();
    let replica_of_lock =
        |name: &str| &cluster.nodes[cluster.replica_of(shard_of_lock(&owners, name))];

    // Until the gateway has read every primary's replica count, grants may not wait.
    let started = Instant::now();
    while !granted_on_replica(&mut locks, replica_of_lock(&unique_key("probe")), "probe").await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "grants never waited"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Locks on every shard: each on its shard's replica the moment it is granted.
    let mut shards = std::collections::HashSet::new();
    for _ in 0..30 {
        let name = unique_key("cluster-synced");
        shards.insert(shard_of_lock(&owners, &name));
        let granted = locks
            .acquire(acquire_request(&name))
            .await
            .expect("Acquire")
            .into_inner();
        assert!(granted.acquired);
        let on_replica = cli(
            replica_of_lock(&name).port,
            &["KEYS", &format!("__gw:lock:*{name}")],
        );
        assert!(
            !on_replica.trim().is_empty(),
            "{name} granted before its replica had it"
        );
    }
    assert_eq!(shards.len(), 3, "the locks covered every shard");

    // One shard's replica frozen: its locks are refused and released; the others' granted.
    let frozen_shard = shard_of_lock(&owners, &unique_key("any"));
    let frozen = &cluster.nodes[cluster.replica_of(frozen_shard)];
    frozen.suspend();
    let mut refused = 0;
    let mut granted_elsewhere = 0;
    for _ in 0..12 {
        let name = unique_key("cluster-frozen");
        let reply = locks.acquire(acquire_request(&name)).await;
        if shard_of_lock(&owners, &name) == frozen_shard {
            let status = reply.expect_err("its replica confirms nothing");
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(status.message().contains("released"), "{status:?}");
            assert!(!locks::inspect(&mut locks, &name).await.held);
            refused += 1;
        } else {
            assert!(reply.expect("Acquire").into_inner().acquired);
            granted_elsewhere += 1;
        }
    }
    frozen.resume();
    assert!(
        refused > 0 && granted_elsewhere > 0,
        "{refused} refused, {granted_elsewhere} granted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acks_at_zero_nothing_waits() {
    let (primary, replica) = primary_and_replica();
    let gateway = Gateway::start(&primary.url(), &["--lock-replica-acks", "0"]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    replica.suspend();
    let granted = locks
        .acquire(acquire_request(&unique_key("unsynced")))
        .await
        .expect("Acquire")
        .into_inner();
    replica.resume();
    assert!(granted.acquired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_keep_rising_across_a_sentinel_failover() {
    let group = RedisSentinels::start();
    let gateway = Gateway::start(&group.url(), &["--redis-command-timeout", "1s"]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let name = unique_key("fenced");
    let replica_port = group
        .servers
        .iter()
        .map(|server| server.port)
        .find(|port| *port != group.primary_port())
        .unwrap();
    until_confirmed_grants(&mut locks, group.server(replica_port)).await;
    let mut last = 0;
    for _ in 0..5 {
        let granted = locks
            .acquire(acquire_request(&name))
            .await
            .expect("Acquire")
            .into_inner();
        assert!(granted.acquired && granted.fencing_token > last);
        last = granted.fencing_token;
        locks
            .release(pb::LockReleaseRequest {
                name: name.clone(),
                token: granted.token,
            })
            .await
            .expect("Release");
    }
    let old_primary = group.primary_port();
    group.server(old_primary).stop();
    let started = Instant::now();
    let granted = loop {
        match locks.acquire(acquire_request(&name)).await {
            Ok(reply) if reply.get_ref().acquired => break reply.into_inner(),
            Ok(reply) => panic!(
                "the released lock was not granted: {:?}",
                reply.into_inner()
            ),
            Err(_) => {
                assert!(started.elapsed() < Duration::from_secs(40), "no failover");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_ne!(group.primary_port(), old_primary);
    assert!(
        granted.fencing_token > last,
        "fencing token {} after the failover, {last} before",
        granted.fencing_token
    );
}
