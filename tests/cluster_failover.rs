//! Redis Cluster failover under load: a primary is killed while clients keep writing; its
//! replica is promoted and the gateway serves that shard again within 10 s of the promotion,
//! calls meanwhile failing within their deadline; locks on the other shards stay exclusive;
//! expiry events from the promoted node reach watchers.

mod common;

use common::requests::set;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::cluster::RedisCluster;
use common::{Gateway, duration, unique_key, with_deadline};
use redis_gateway::pb;
use redis_gateway::pb::lock_client::LockClient;

/// A key, `{tag}…`, whose slot the primary `index` serves.
fn key_on(cluster: &RedisCluster, index: usize, label: &str) -> String {
    (0..)
        .map(|n| format!("{{{label}-{n}}}:{}", unique_key(label)))
        .find(|key| cluster.primary_of(key) == index)
        .expect("some tag lands on every primary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_is_replaced_and_the_gateway_serves_its_shard_again() {
    let cluster = RedisCluster::start();
    let gateway = Gateway::start(&cluster.url(), &["--redis-command-timeout", "1s"]).await;
    let victim = cluster.primary_of(&unique_key("victim"));
    let survivors: Vec<usize> = (0..cluster.nodes.len())
        .filter(|&index| index != victim && cluster.role(index) == "master")
        .collect();
    let on_victim = key_on(&cluster, victim, "victim");

    // Locks on the other shards (a lock's keys share the hash tag Acquire returns), held
    // across the failover.
    let mut locks = LockClient::new(gateway.channel().await);
    let mut held = Vec::new();
    for attempt in 0.. {
        if held.len() == survivors.len() || attempt > 100 {
            break;
        }
        let name = unique_key("failover-lock");
        let acquired = locks
            .acquire(pb::LockAcquireRequest {
                name: name.clone(),
                ttl: Some(duration(Duration::from_secs(60))),
                owner: "before".into(),
                ..Default::default()
            })
            .await
            .expect("Acquire")
            .into_inner();
        assert!(acquired.acquired);
        let shard = cluster.primary_of(&acquired.hash_tag);
        if shard == victim || held.iter().any(|(_, other)| *other == shard) {
            locks
                .release(pb::LockReleaseRequest {
                    name,
                    token: acquired.token,
                })
                .await
                .expect("Release");
        } else {
            held.push((name, shard));
        }
    }
    assert_eq!(
        held.len(),
        survivors.len(),
        "a lock on every surviving shard"
    );

    // Continuous load on the victim's shard and on the others.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for index in 0..4 {
        let mut kv = gateway.kv().await;
        let key = if index == 0 {
            on_victim.clone()
        } else {
            unique_key("load")
        };
        let (stop, ok, failed, slowest) =
            (stop.clone(), ok.clone(), failed.clone(), slowest.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let outcome = kv
                    .set(with_deadline(set(&key, "v"), Duration::from_secs(2)))
                    .await;
                slowest.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                match outcome {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.nodes[victim].stop();
    let killed = Instant::now();
    let mut kv = gateway.kv().await;
    let mut promoted = None;
    let served = loop {
        if promoted.is_none()
            && (0..cluster.nodes.len()).any(|index| {
                index != victim
                    && !survivors.contains(&index)
                    && cluster.nodes[index].is_running()
                    && cluster.role(index) == "master"
            })
        {
            promoted = Some(killed.elapsed());
        }
        if promoted.is_some()
            && kv
                .set(with_deadline(
                    set(&on_victim, "after"),
                    Duration::from_secs(2),
                ))
                .await
                .is_ok()
        {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the shard was not served again within 60 s (promoted after {promoted:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let promoted = promoted.expect("a replica was promoted");
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    assert!(
        served.saturating_sub(promoted) <= Duration::from_secs(10),
        "promoted after {promoted:?}, served again only after {served:?}"
    );
    // No call hung past its 2 s deadline.
    assert!(
        slowest.load(Ordering::Relaxed) < 3_000,
        "a call took {} ms",
        slowest.load(Ordering::Relaxed)
    );

    // The locks on the other shards are still held: another owner cannot take them.
    for (name, _) in &held {
        let other = locks
            .acquire(pb::LockAcquireRequest {
                name: name.clone(),
                ttl: Some(duration(Duration::from_secs(10))),
                owner: "after".into(),
                ..Default::default()
            })
            .await
            .expect("Acquire")
            .into_inner();
        assert!(!other.acquired, "{name} was handed out twice");
    }

    // Expiry events from the promoted node reach a watcher.
    let expiring = key_on(&cluster, cluster.primary_of(&on_victim), "expiring");
    let mut events = kv
        .watch_expirations(pb::KeyValueWatchExpirationsRequest {
            pattern: expiring.clone(),
            ..Default::default()
        })
        .await
        .expect("WatchExpirations")
        .into_inner();
    events.message().await.expect("stream").expect("subscribed");
    kv.set(pb::KeyValueSetRequest {
        ttl: Some(duration(Duration::from_millis(200))),
        ..set(&expiring, "v")
    })
    .await
    .expect("Set");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.message())
            .await
            .expect("the expiration within 10 s")
            .expect("stream")
            .expect("event");
        if let Some(pb::key_value_watch_expirations_response::Event::Expired(expired)) = event.event
        {
            assert_eq!(expired.key, expiring);
            break;
        }
    }
    println!(
        "cluster failover: promoted {promoted:?} and served again {served:?} after the primary \
         died; {} calls failed and {} succeeded meanwhile; slowest call {} ms",
        failed.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed),
        slowest.load(Ordering::Relaxed)
    );
}
