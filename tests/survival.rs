//! Surviving faults with nothing lost and nothing applied twice, and running as several
//! replicas:
//!
//! - durability: every Set the gateway acknowledged is in Redis after Redis was killed
//!   (SIGKILL) and restarted with `appendonly yes` and `appendfsync always`, and the gateway
//!   recovered without a restart;
//! - at most once: Increments from 16 clients while Redis drops every client connection every
//!   2 s: successful replies ≤ final value ≤ successful replies + calls whose outcome was
//!   reported unknown;
//! - replicas: two gateways on one Redis share locks, sessions and expiry events.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, RedisServer, duration, unique_key, with_deadline};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::lock_client::LockClient;
use redis_gateway::pb::session_client::SessionClient;
use tonic::Code;

/// Whether a failed call's status says its write may have been applied.
fn outcome_unknown(status: &tonic::Status) -> bool {
    status
        .message()
        .contains("may or may not have been applied")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_a_redis_crash_with_fsync_always() {
    const WRITES: u64 = 20_000;
    const CLIENTS: u64 = 16;
    let redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let gateway = Gateway::start(&redis.url(), &["--redis-command-timeout", "1s"]).await;
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let counted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let prefix = unique_key("durable");
    let mut writers = Vec::new();
    for client in 0..CLIENTS {
        let mut kv = gateway.kv().await;
        let (acknowledged, counted, failed) =
            (acknowledged.clone(), counted.clone(), failed.clone());
        let prefix = prefix.clone();
        writers.push(tokio::spawn(async move {
            let mut index = 0u64;
            while counted.load(Ordering::Relaxed) < WRITES {
                let key = format!("{prefix}:{client}:{index}");
                index += 1;
                let request = pb::KeyValueSetRequest {
                    key: key.clone(),
                    value: Bytes::from(key.clone()),
                    ..Default::default()
                };
                match kv.set(with_deadline(request, Duration::from_secs(2))).await {
                    Ok(_) => {
                        acknowledged.lock().unwrap().push(key);
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    // Crash Redis a quarter of the way in, and start it again on the same files.
    while counted.load(Ordering::Relaxed) < WRITES / 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.stop();
    let crashed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    for writer in writers {
        writer.await.expect("writer");
    }
    let recovered = crashed.elapsed();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() as u64 >= WRITES);
    assert!(failed.load(Ordering::Relaxed) > 0, "the crash was noticed");

    // Every acknowledged key is there, with its value.
    let direct = redis.client().await;
    let mut missing = Vec::new();
    for chunk in acknowledged.chunks(500) {
        let values: Vec<Option<String>> = direct.mget(chunk.to_vec()).await.expect("MGET");
        for (key, value) in chunk.iter().zip(values) {
            if value.as_deref() != Some(key.as_str()) {
                missing.push(key.clone());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    println!(
        "durability: {} acknowledged writes, 0 lost; {} calls failed during the crash; all \
         written {recovered:?} after the crash",
        acknowledged.len(),
        failed.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_apply_at_most_once_while_connections_are_cut() {
    const CLIENTS: usize = 16;
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &["--redis-command-timeout", "1s"]).await;
    let key = unique_key("at-most-once");
    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let known_failures = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut kv = gateway.kv().await;
        let (key, stop) = (key.clone(), stop.clone());
        let (succeeded, unknown, known_failures) =
            (succeeded.clone(), unknown.clone(), known_failures.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let request = pb::KeyValueIncrementRequest {
                    key: key.clone(),
                    delta: 1,
                    ..Default::default()
                };
                match kv
                    .increment(with_deadline(request, Duration::from_secs(2)))
                    .await
                {
                    Ok(_) => {
                        succeeded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) if outcome_unknown(&status) => {
                        unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        assert!(
                            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
                            "{status:?}"
                        );
                        known_failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    // Every 2 s, Redis drops every client connection but this one (the gateway's pool among
    // them), whatever is in flight.
    let admin = redis.client().await;
    let mut cuts = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let killed: i64 = admin
            .custom(
                fred::cmd!("CLIENT"),
                vec!["KILL", "TYPE", "normal", "SKIPME", "yes"],
            )
            .await
            .expect("CLIENT KILL");
        cuts += killed;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let value: i64 = admin.get(&key).await.expect("GET");
    let (succeeded, unknown) = (
        succeeded.load(Ordering::Relaxed) as i64,
        unknown.load(Ordering::Relaxed) as i64,
    );
    assert!(cuts > 0, "no connection was cut");
    assert!(
        succeeded <= value && value <= succeeded + unknown,
        "succeeded {succeeded}, unknown {unknown}, final value {value}"
    );
    println!(
        "at most once: {succeeded} increments acknowledged, {unknown} with an unknown outcome, \
         {} failed before being sent; final value {value}; {cuts} connections cut",
        known_failures.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_locks_sessions_and_expirations() {
    let redis = RedisServer::start();
    let first = Gateway::start(&redis.url(), &[]).await;
    let second = Gateway::start(&redis.url(), &[]).await;

    // A lock held through one is respected through the other.
    let name = unique_key("replica-lock");
    let acquire = |owner: &str| pb::LockAcquireRequest {
        name: name.clone(),
        ttl: Some(duration(Duration::from_secs(30))),
        owner: owner.to_owned(),
        ..Default::default()
    };
    let mut locks_one = LockClient::new(first.channel().await);
    let mut locks_two = LockClient::new(second.channel().await);
    let held = locks_one
        .acquire(acquire("one"))
        .await
        .expect("Acquire")
        .into_inner();
    assert!(held.acquired);
    let refused = locks_two
        .acquire(acquire("two"))
        .await
        .expect("Acquire")
        .into_inner();
    assert!(!refused.acquired, "{refused:?}");
    let released = locks_one
        .release(pb::LockReleaseRequest {
            name: name.clone(),
            token: held.token.clone(),
        })
        .await
        .expect("Release")
        .into_inner();
    assert!(released.released);
    let next = locks_two
        .acquire(acquire("two"))
        .await
        .expect("Acquire")
        .into_inner();
    assert!(
        next.acquired && next.fencing_token > held.fencing_token,
        "{next:?}"
    );

    // A session created through one is visible through the other.
    let mut sessions_one = SessionClient::new(first.channel().await);
    let mut sessions_two = SessionClient::new(second.channel().await);
    let created = sessions_one
        .create(pb::SessionCreateRequest {
            user_id: unique_key("replica-user"),
            ..Default::default()
        })
        .await
        .expect("Create")
        .into_inner();
    let seen = sessions_two
        .get(pb::SessionGetRequest {
            session_id: created.session_id.clone(),
            ..Default::default()
        })
        .await
        .expect("Get through the other gateway")
        .into_inner();
    assert_eq!(seen.user_id, created.user_id);

    // Each gateway's watchers receive the expiration.
    let key = unique_key("replica-expiry");
    let mut streams = Vec::new();
    for gateway in [&first, &second] {
        let mut events = gateway
            .kv()
            .await
            .watch_expirations(pb::KeyValueWatchExpirationsRequest {
                pattern: key.clone(),
                ..Default::default()
            })
            .await
            .expect("WatchExpirations")
            .into_inner();
        let subscribed = events.message().await.expect("stream").expect("subscribed");
        assert!(matches!(
            subscribed.event,
            Some(pb::key_value_watch_expirations_response::Event::Subscribed(
                _
            ))
        ));
        streams.push(events);
    }
    first
        .kv()
        .await
        .set(pb::KeyValueSetRequest {
            key: key.clone(),
            value: Bytes::from_static(b"v"),
            ttl: Some(duration(Duration::from_millis(200))),
            ..Default::default()
        })
        .await
        .expect("Set");
    let mut received = HashSet::new();
    for (index, events) in streams.iter_mut().enumerate() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .expect("stream")
            .expect("event");
        if let Some(pb::key_value_watch_expirations_response::Event::Expired(expired)) = event.event
        {
            assert_eq!(expired.key, key);
            received.insert(index);
        }
    }
    assert_eq!(
        received.len(),
        2,
        "both gateways' watchers got the expiration"
    );
}
