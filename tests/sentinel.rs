//! Redis Sentinel: the gateway finds the primary through the sentinels, serves through it, and
//! follows a failover by itself.

mod common;

use common::requests::{get, set};
use std::time::{Duration, Instant};

use common::sentinel::RedisSentinels;
use common::{Gateway, unique_key, with_deadline};
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_through_the_primary_the_sentinels_name() {
    let group = RedisSentinels::start();
    let gateway = Gateway::start(&group.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("sentinel");
    kv.set(set(&key, "v")).await.expect("Set");
    let read = kv.get(get(&key)).await.expect("Get").into_inner();
    assert!(read.found && read.value == "v", "{read:?}");
    // It went to the primary.
    let primary = group.server(group.primary_port()).client().await;
    let stored: Option<String> = fred::prelude::KeysInterface::get(&primary, &key)
        .await
        .expect("GET");
    assert_eq!(stored.as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_primary_dies_the_gateway_follows_the_promoted_replica() {
    let group = RedisSentinels::start();
    let gateway = Gateway::start(&group.url(), &["--redis-command-timeout", "1s"]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("failover");
    kv.set(set(&key, "before")).await.expect("Set");
    // The write reached the replica before the primary dies (asynchronous replication would
    // otherwise be allowed to lose it).
    let old_primary = group.primary_port();
    common::sentinel::wait_for(
        Duration::from_secs(10),
        "the replica to have the key",
        || {
            let replica = group
                .servers
                .iter()
                .find(|server| server.port != old_primary)
                .unwrap();
            common::cluster::cli(replica.port, &["GET", &key]).trim() == "before"
        },
    );

    group.server(old_primary).stop();
    let killed = Instant::now();
    // Calls during the failover fail quickly (never past their deadline) until a replica is
    // promoted and the gateway follows it.
    let deadline = Duration::from_secs(2);
    let mut failed = 0;
    let mut promoted: Option<Duration> = None;
    let served = loop {
        if promoted.is_none() && group.primary_port() != old_primary {
            promoted = Some(killed.elapsed());
        }
        let started = Instant::now();
        match kv.set(with_deadline(set(&key, "after"), deadline)).await {
            Ok(_) => break killed.elapsed(),
            Err(status) => {
                assert!(
                    started.elapsed() < deadline + Duration::from_millis(500),
                    "a call took {:?}: {status:?}",
                    started.elapsed()
                );
                failed += 1;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "the gateway did not follow the failover within 40 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let new_primary = group.primary_port();
    assert_ne!(
        new_primary, old_primary,
        "the sentinels promoted the replica"
    );
    let read = kv.get(get(&key)).await.expect("Get").into_inner();
    assert_eq!(read.value, "after");
    gateway
        .wait_for_health(ServingStatus::Serving, Duration::from_secs(10))
        .await;
    // Within 10 s of the promotion (the sentinels take about 1 s to agree the primary is
    // down, then elect and promote).
    let promoted = promoted.unwrap_or(served);
    assert!(
        served.saturating_sub(promoted) <= Duration::from_secs(10),
        "promoted after {promoted:?}, served again only after {served:?}"
    );
    println!(
        "sentinel failover: promoted {promoted:?} and served again {served:?} after the primary \
         died; {failed} calls failed meanwhile, each within its deadline"
    );
}
