//! Limits that keep one client from taking the gateway down: calls beyond GATEWAY_MAX_IN_FLIGHT
//! are shed at once (RESOURCE_EXHAUSTED, nothing queued, memory bounded); a tenant's watch
//! streams are capped (GATEWAY_MAX_WATCHERS_PER_TENANT); a client that opens streams and
//! never reads them does not slow anyone else down.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::start_gateway_process;
use common::{Gateway, RedisServer, connect_channel, unique_key};
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::lock_client::LockClient;
use tonic::Code;

/// The resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_in_flight_limit_are_shed_at_once_and_memory_stays_bounded() {
    let redis = RedisServer::start();
    let url = redis.url();
    let gateway = start_gateway_process(
        &[
            "--redis-url",
            &url,
            "--runtimes",
            "1",
            "--max-in-flight",
            "50",
            "--health-interval",
            "100ms",
        ],
        &[],
    )
    .await;
    let pid = gateway.child.id().expect("running");
    // A held lock: every Acquire below waits for it, staying in flight.
    let channel = connect_channel(gateway.addr, Duration::from_secs(10)).await;
    let mut locks = LockClient::new(channel);
    let name = unique_key("shed");
    let held =
        common::locks::acquire(&mut locks, &name, Duration::from_secs(60), Duration::ZERO).await;
    assert!(held.acquired);
    let before = rss_kib(pid);

    // 10,000 calls at once over 20 connections (each under HTTP/2's stream limit).
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let channel = connect_channel(gateway.addr, Duration::from_secs(10)).await;
        for _ in 0..500 {
            let mut locks = LockClient::new(channel.clone());
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                let asked = Instant::now();
                let reply = locks
                    .acquire(common::locks::acquire_request(
                        &name,
                        Duration::from_secs(5),
                        Duration::from_secs(30),
                    ))
                    .await;
                (
                    reply.map(|_| ()).map_err(|status| status.code()),
                    asked.elapsed(),
                )
            }));
        }
    }
    // Sample the gateway's memory while the calls arrive and wait.
    let mut peak = before;
    let mut shed = 0;
    let mut slowest_refusal = Duration::ZERO;
    let mut pending = Vec::new();
    for task in tasks {
        if task.is_finished() {
            let (reply, took) = task.await.expect("task");
            match reply {
                Err(Code::ResourceExhausted) => {
                    shed += 1;
                    slowest_refusal = slowest_refusal.max(took);
                }
                other => panic!("unexpected {other:?}"),
            }
        } else {
            pending.push(task);
        }
        peak = peak.max(rss_kib(pid));
    }
    // The rest: either refused too, or among the at most 50 admitted (still waiting).
    let settle = Instant::now() + Duration::from_secs(8);
    let mut waiting = 0;
    for task in pending {
        let left = settle.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.max(Duration::from_millis(10)), task).await {
            Ok(Ok((Err(Code::ResourceExhausted), took))) => {
                shed += 1;
                slowest_refusal = slowest_refusal.max(took);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => waiting += 1,
        }
        peak = peak.max(rss_kib(pid));
    }
    println!(
        "10,000 calls against a limit of 50: {shed} shed (slowest refusal {slowest_refusal:?}), \
         {waiting} admitted and waiting, in {:?}; gateway RSS {} KiB before, {} KiB at peak",
        started.elapsed(),
        before,
        peak
    );
    assert!(waiting <= 50, "{waiting} calls admitted beyond the limit");
    assert_eq!(shed + waiting, 10_000);
    assert!(shed >= 9_950, "only {shed} shed");
    assert!(
        peak < before + 100 * 1024,
        "the gateway grew from {before} KiB to {peak} KiB"
    );
    // Health is never shed; once the waiters are gone, calls are served again.
    drop(locks);
    let mut kv = KeyValueClient::new(connect_channel(gateway.addr, Duration::from_secs(10)).await);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match kv
            .set(pb::KeyValueSetRequest {
                key: unique_key("after"),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })
            .await
        {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(Instant::now() < deadline, "never served again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_opens_at_most_its_share_of_watch_streams() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &["--max-watchers-per-tenant", "3"]).await;
    let mut kv = gateway.kv().await;
    let open = |kv: &mut KeyValueClient<tonic::transport::Channel>| {
        let mut kv = kv.clone();
        async move {
            kv.watch_expirations(pb::KeyValueWatchExpirationsRequest::default())
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(open(&mut kv).await.expect("within the limit"));
    }
    let refused = open(&mut kv).await.expect_err("a fourth");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("GATEWAY_MAX_WATCHERS_PER_TENANT")
    );
    // Closing one frees its place.
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(&mut kv).await {
            Ok(stream) => {
                streams.push(stream);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert!(
                    Instant::now() < deadline,
                    "the closed stream's place never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_streams_does_not_slow_others() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    // Enough keys that each Scan has far more to send than HTTP/2's windows hold.
    let prefix = unique_key("unread");
    let admin = redis.client().await;
    let value = "x".repeat(1000);
    for batch in 0..20 {
        let pairs: Vec<(String, String)> = (0..500)
            .map(|index| (format!("{prefix}:{batch}:{index}"), value.clone()))
            .collect();
        let _: () = fred::prelude::KeysInterface::mset(&admin, pairs)
            .await
            .expect("MSET");
    }
    // A greedy client opens 50 Scans and never reads them.
    let greedy = KeyValueClient::new(connect_channel(gateway.addr, Duration::from_secs(10)).await);
    let mut unread = Vec::new();
    for _ in 0..50 {
        let mut greedy = greedy.clone();
        unread.push(
            greedy
                .scan(pb::KeyValueScanRequest {
                    pattern: format!("{prefix}:*"),
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .expect("Scan opens"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Everyone else is served as usual.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for index in 0..200 {
        let key = format!("{prefix}:other:{index}");
        let call = Instant::now();
        kv.set(pb::KeyValueSetRequest {
            key: key.clone(),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        })
        .await
        .expect("Set");
        let read = kv
            .get(pb::KeyValueGetRequest {
                key,
                ..Default::default()
            })
            .await
            .expect("Get")
            .into_inner();
        assert_eq!(read.value, "v");
        slowest = slowest.max(call.elapsed());
    }
    println!(
        "400 calls beside 50 unread Scans: {:?} in all, slowest pair {slowest:?}",
        started.elapsed()
    );
    assert!(slowest < Duration::from_secs(2), "a call took {slowest:?}");
    drop(unread);
}
