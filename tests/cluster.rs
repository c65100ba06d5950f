//! Redis Cluster specifics beyond the shared behaviour suites (which `make test` runs against
//! a cluster too): Monitor reports every primary; a resharding onto a new primary under load
//! (redirections followed, no call failed, expiry events from the new primary arrive); a
//! cluster that is down (CLUSTERDOWN) fails calls fast and is served again once it is up.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::RedisCluster;
use common::{Gateway, unique_key, with_deadline};
use redis_gateway::pb;
use redis_gateway::pb::key_value_watch_expirations_response::Event;
use redis_gateway::pb::monitor_client::MonitorClient;
use redis_gateway::pb::monitor_get_health_response::Mode;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_reports_every_primary() {
    let cluster = RedisCluster::start();
    let gateway = Gateway::start(&cluster.url(), &[]).await;
    let mut monitor = MonitorClient::new(gateway.channel().await);
    let primaries: Vec<String> = (0..cluster.nodes.len())
        .filter(|&index| cluster.role(index) == "master")
        .map(|index| format!("127.0.0.1:{}", cluster.nodes[index].port))
        .collect();
    assert_eq!(primaries.len(), 3);

    let info = monitor
        .get_info(pb::MonitorGetInfoRequest {
            section: "server".into(),
        })
        .await
        .expect("GetInfo")
        .into_inner();
    let mut addresses: Vec<String> = info.nodes.iter().map(|node| node.address.clone()).collect();
    addresses.sort();
    let mut expected = primaries.clone();
    expected.sort();
    assert_eq!(addresses, expected);

    let memory = monitor
        .get_memory(pb::MonitorGetMemoryRequest {})
        .await
        .expect("GetMemory")
        .into_inner();
    assert_eq!(memory.nodes.len(), 3, "{memory:?}");
    assert_eq!(
        memory.used_memory,
        memory
            .nodes
            .iter()
            .map(|node| node.used_memory)
            .sum::<u64>()
    );

    let health = monitor
        .get_health(pb::MonitorGetHealthRequest {})
        .await
        .expect("GetHealth")
        .into_inner();
    assert_eq!(health.mode(), Mode::Cluster, "{health:?}");
}

fn set(key: &str, value: &str, ttl: Option<Duration>) -> pb::KeyValueSetRequest {
    pb::KeyValueSetRequest {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ttl: ttl.map(common::duration),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::KeyValueGetRequest {
    pb::KeyValueGetRequest {
        key: key.to_owned(),
        ..Default::default()
    }
}

fn slot(key: &str) -> usize {
    usize::from(fred::util::redis_keyslot(key.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharding_onto_a_new_primary_is_followed_by_calls_and_by_expiry_events() {
    let mut cluster = RedisCluster::start();
    let gateway = Gateway::start(&cluster.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let prefix = unique_key("reshard");
    let keys: Vec<String> = (0..300).map(|index| format!("{prefix}:{index}")).collect();
    for key in &keys {
        kv.set(set(key, "0", None)).await.expect("Set");
    }
    let mut events = kv
        .watch_expirations(pb::KeyValueWatchExpirationsRequest {
            pattern: format!("{prefix}:*"),
            kinds: vec![pb::KeyEventKind::Expired as i32],
            resume_after: String::new(),
        })
        .await
        .expect("WatchExpirations")
        .into_inner();
    let subscribed = events
        .message()
        .await
        .expect("no error")
        .and_then(|m| m.event);
    assert!(
        matches!(subscribed, Some(Event::Subscribed(_))),
        "{subscribed:?}"
    );

    // Writers and readers keep going while slots (and their keys) migrate.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (stop, calls, keys) = (stop.clone(), calls.clone(), keys.clone());
        let mut kv = gateway.kv().await;
        load.push(tokio::spawn(async move {
            let mut round = 0u64;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                for key in keys.iter().skip(worker).step_by(4) {
                    let value = round.to_string();
                    if let Err(status) = kv.set(set(key, &value, None)).await {
                        failures.push(format!("Set {key}: {status:?}"));
                    }
                    match kv.get(get(key)).await {
                        Ok(read) if read.get_ref().value == value.as_bytes() => {}
                        other => failures.push(format!("Get {key}: {other:?}")),
                    }
                    calls.fetch_add(2, Ordering::Relaxed);
                }
            }
            failures
        }));
    }
    let new = tokio::task::block_in_place(|| cluster.add_primary());
    let source = cluster.primary_of(&keys[0]);
    let started = Instant::now();
    tokio::task::block_in_place(|| cluster.reshard(source, new, 1000));
    let resharding = started.elapsed();
    // The load goes on a little after the last slot moved.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in load {
        failures.extend(worker.await.expect("load task"));
    }
    let owners = cluster.slot_owners();
    let moved = keys
        .iter()
        .filter(|key| owners[slot(key)] == Some(new))
        .count();
    println!(
        "resharding 1000 slots took {resharding:?}: {} calls meanwhile, {} failed; {moved} of \
         the 300 keys moved to the new primary",
        calls.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(failures.is_empty(), "calls failed: {failures:#?}");
    assert!(moved > 0, "no test key moved to the new primary");

    // A key on the new primary expires: the recorder follows the new primary (it checks
    // every 2 s) and the watcher hears of it.
    let expiring = (0..)
        .map(|index| format!("{prefix}:expiring:{index}"))
        .find(|key| owners[slot(key)] == Some(new))
        .expect("a key on the new primary");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until the recorder is subscribed there, an expiry may go unrecorded: set it again.
    let heard = loop {
        kv.set(set(&expiring, "x", Some(Duration::from_millis(300))))
            .await
            .expect("Set with TTL");
        match tokio::time::timeout(Duration::from_secs(2), events.message()).await {
            Ok(message) => match message.expect("no error").and_then(|m| m.event) {
                Some(Event::Expired(expired)) if expired.key == expiring => break true,
                // A gap marks the recorder's new subscription.
                Some(Event::Gap(_)) => continue,
                other => panic!("unexpected {other:?}"),
            },
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => break false,
        }
    };
    assert!(heard, "no expiry event from the new primary within 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_shard_is_down_calls_fail_fast_unsent_and_it_is_served_again_once_up() {
    let cluster = RedisCluster::start();
    let gateway = Gateway::start(&cluster.url(), &["--redis-command-timeout", "1s"]).await;
    let mut kv = gateway.kv().await;
    let prefix = unique_key("down");
    let owners = cluster.slot_owners();
    let doomed = format!("{prefix}:doomed");
    let victim = owners[slot(&doomed)].expect("an owner");
    let healthy = (0..)
        .map(|index| format!("{prefix}:healthy:{index}"))
        .find(|key| owners[slot(key)] != Some(victim))
        .expect("a key on another shard");
    kv.set(set(&healthy, "before", None)).await.expect("Set");

    // A primary and its replica die: their slots have no server (with full coverage required,
    // Redis' default, the other nodes answer CLUSTERDOWN for every key), and the cluster
    // client cannot connect to every primary of its slot map.
    let replica = cluster.replica_of(victim);
    cluster.nodes[replica].stop();
    cluster.nodes[victim].stop();
    common::sentinel::wait_for(Duration::from_secs(20), "cluster_state:fail", || {
        cluster
            .nodes
            .iter()
            .filter(|node| node.is_running())
            .all(|node| {
                cluster
                    .cli(node.port, &["CLUSTER", "INFO"])
                    .contains("cluster_state:fail")
            })
    });
    // Calls fail fast from the start; once the gateway has seen it (health NOT_SERVING), they
    // are refused before anything is sent: outcome known.
    gateway
        .wait_for_health(
            tonic_health::pb::health_check_response::ServingStatus::NotServing,
            Duration::from_secs(10),
        )
        .await;
    let deadline = Duration::from_secs(3);
    let mut messages = Vec::new();
    for key in [&healthy, &doomed] {
        for request in 0..5 {
            let started = Instant::now();
            let value = format!("down-{request}");
            let status = kv
                .set(with_deadline(set(key, &value, None), deadline))
                .await
                .expect_err("the cluster is down");
            assert!(
                started.elapsed() < deadline,
                "a call took {:?}",
                started.elapsed()
            );
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            messages.push(status.message().to_owned());
        }
    }
    assert!(
        messages
            .iter()
            .all(|message| !message.contains("may or may not")),
        "{messages:#?}"
    );
    cluster.nodes[victim].restart();
    cluster.nodes[replica].restart();
    tokio::task::block_in_place(|| cluster.wait_until_ok(Duration::from_secs(30)));
    let up = Instant::now();
    let mut read_back = false;
    for key in [&healthy, &doomed] {
        loop {
            // Refused, not applied: the first read of the healthy key is the value from before.
            if !read_back {
                match kv.get(with_deadline(get(key), deadline)).await {
                    Ok(read) => {
                        assert_eq!(read.get_ref().value, "before", "a refused Set was applied");
                        read_back = true;
                    }
                    Err(status) => {
                        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            match kv
                .set(with_deadline(set(key, "after", None), deadline))
                .await
            {
                Ok(_) => break,
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert!(
                        up.elapsed() < Duration::from_secs(15),
                        "not served 15 s after the cluster was up again: {status:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let read = kv.get(get(key)).await.expect("Get").into_inner();
        assert_eq!(read.value, "after");
    }
    println!("served again {:?} after the cluster was up", up.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_cluster_reports_itself_down_calls_are_refused_before_they_are_sent() {
    let cluster = RedisCluster::start();
    let gateway = Gateway::start(&cluster.url(), &["--redis-command-timeout", "1s"]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("reported-down");
    kv.set(set(&key, "before", None)).await.expect("Set");

    // Every node alive, but one slot assigned to none: with full coverage required the
    // cluster is down, and every node answers CLUSTERDOWN for every key.
    let owners = cluster.slot_owners();
    let (orphan, owner) = owners
        .iter()
        .enumerate()
        .find_map(|(slot, owner)| owner.map(|owner| (slot, owner)))
        .expect("an assigned slot");
    let orphan = orphan.to_string();
    for node in &cluster.nodes {
        cluster.cli(node.port, &["CLUSTER", "DELSLOTS", &orphan]);
    }
    common::sentinel::wait_for(Duration::from_secs(20), "cluster_state:fail", || {
        cluster.nodes.iter().all(|node| {
            cluster
                .cli(node.port, &["CLUSTER", "INFO"])
                .contains("cluster_state:fail")
        })
    });
    // The first CLUSTERDOWN reply tells the gateway (fred drops that connection, so calls in
    // flight on it have an unknown outcome); from then on calls are refused unsent.
    let deadline = Duration::from_secs(3);
    let first_refusal = Instant::now();
    loop {
        let status = kv
            .set(with_deadline(set(&key, "during", None), deadline))
            .await
            .expect_err("the cluster is down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        if status.message().contains("not sent") {
            break;
        }
        assert!(
            first_refusal.elapsed() < Duration::from_secs(10),
            "the gateway never refused up front: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        let started = Instant::now();
        let status = kv
            .set(with_deadline(set(&key, "during", None), deadline))
            .await
            .expect_err("the cluster is down");
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("Cluster is down") && status.message().contains("not sent"),
            "{status:?}"
        );
    }
    gateway
        .wait_for_health(
            tonic_health::pb::health_check_response::ServingStatus::NotServing,
            Duration::from_secs(5),
        )
        .await;

    // The slot is assigned again: the gateway sees it (its probe reads a key) and serves.
    cluster.cli(cluster.nodes[owner].port, &["CLUSTER", "ADDSLOTS", &orphan]);
    tokio::task::block_in_place(|| cluster.wait_until_ok(Duration::from_secs(30)));
    let up = Instant::now();
    loop {
        match kv.get(with_deadline(get(&key), deadline)).await {
            Ok(read) => {
                // Nothing refused was applied.
                assert_eq!(read.get_ref().value, "before");
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(up.elapsed() < Duration::from_secs(15), "{status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    gateway
        .wait_for_health(
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await;
    println!(
        "served again {:?} after the slot was assigned again",
        up.elapsed()
    );
}
