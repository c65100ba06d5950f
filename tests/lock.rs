//! Lock service behaviour against a real redis-server: acquire / release / extend / inspect,
//! expiry, wrong tokens, mutual exclusion under contention with strictly increasing fencing
//! tokens, wake-up on release, fair order, lock delay, guarded writes, deadlines, an acquisition
//! whose outcome is unknown, bad input, and the lock keys' place in the reserved key space.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::locks::{acquire, acquire_request, inspect, release, start, wait_for_waiters};
use common::{
    Gateway, assert_code, assert_status, duration, shared_redis, start_with, unique_key,
    with_deadline,
};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::lock_client::LockClient;
use redis_gateway::pb::transaction_guard::Guard;
use redis_gateway::pb::transaction_operation::Op;
use tonic::Code;

fn millis(value: &Option<prost_types::Duration>) -> i64 {
    let value = value.as_ref().expect("duration set");
    value.seconds * 1000 + i64::from(value.nanos) / 1_000_000
}

#[tokio::test]
async fn acquire_release_and_inspect_report_the_holder() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("lock-basic");
    let free = inspect(&mut locks, &name).await;
    assert!(!free.held);
    assert_eq!(free.waiters, 0);
    assert!(free.ttl.is_none());

    let mut request = acquire_request(&name, Duration::from_secs(10), Duration::ZERO);
    request.owner = "worker-7/pid 4242".into();
    let first = locks.acquire(request).await.unwrap().into_inner();
    assert!(first.acquired);
    assert_eq!(first.token.len(), 32, "128 bits as hex");
    assert!(first.fencing_token >= 1);
    assert!(first.expires_at.is_some());
    assert!(
        first.hash_tag.starts_with('{') && first.hash_tag.ends_with('}'),
        "{}",
        first.hash_tag
    );

    let held = inspect(&mut locks, &name).await;
    assert!(held.held);
    assert_eq!(held.owner, "worker-7/pid 4242");
    assert_eq!(held.fencing_token, first.fencing_token);
    let left = millis(&held.ttl);
    assert!(left > 9_000 && left <= 10_000, "{left} ms left");

    // Busy: a second acquisition without waiting is refused at once.
    let busy = acquire(&mut locks, &name, Duration::from_secs(10), Duration::ZERO).await;
    assert!(!busy.acquired);
    assert!(busy.token.is_empty());
    assert_eq!(busy.fencing_token, 0);
    assert_eq!(busy.hash_tag, first.hash_tag);

    assert!(release(&mut locks, &name, &first.token).await);
    assert!(
        !release(&mut locks, &name, &first.token).await,
        "released twice"
    );
    let free = inspect(&mut locks, &name).await;
    assert!(!free.held);
    assert!(free.owner.is_empty());
    assert!(free.fencing_token >= first.fencing_token);

    let second = acquire(&mut locks, &name, Duration::from_secs(10), Duration::ZERO).await;
    assert!(second.acquired);
    assert!(second.fencing_token > first.fencing_token);
    assert_ne!(second.token, first.token);
}

#[tokio::test]
async fn expiry_frees_the_lock_and_extend_keeps_it() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("lock-expiry");
    let first = acquire(
        &mut locks,
        &name,
        Duration::from_millis(200),
        Duration::ZERO,
    )
    .await;
    assert!(first.acquired);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!inspect(&mut locks, &name).await.held);
    assert!(
        !release(&mut locks, &name, &first.token).await,
        "an expired token releases nothing"
    );
    let expired_extend = locks
        .extend(pb::LockExtendRequest {
            name: name.clone(),
            token: first.token.clone(),
            ttl: Some(duration(Duration::from_secs(1))),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!expired_extend.extended, "an expired lease is not re-taken");
    assert!(expired_extend.expires_at.is_none());

    let second = acquire(
        &mut locks,
        &name,
        Duration::from_millis(300),
        Duration::ZERO,
    )
    .await;
    assert!(second.acquired);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let extended = locks
            .extend(pb::LockExtendRequest {
                name: name.clone(),
                token: second.token.clone(),
                ttl: Some(duration(Duration::from_millis(300))),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(extended.extended);
        assert!(extended.expires_at.is_some());
    }
    // 600 ms after acquisition with a 300 ms lease: still held thanks to Extend.
    let held = inspect(&mut locks, &name).await;
    assert!(held.held);
    assert_eq!(held.fencing_token, second.fencing_token);
}

#[tokio::test]
async fn a_wrong_token_neither_releases_nor_extends() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("lock-wrong-token");
    let held = acquire(&mut locks, &name, Duration::from_secs(10), Duration::ZERO).await;
    let forged = "0".repeat(32);
    assert!(!release(&mut locks, &name, &forged).await);
    let extend = locks
        .extend(pb::LockExtendRequest {
            name: name.clone(),
            token: forged,
            ttl: Some(duration(Duration::from_secs(60))),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!extend.extended);
    let status = inspect(&mut locks, &name).await;
    assert!(status.held);
    assert!(millis(&status.ttl) <= 10_000, "the lease was not extended");
    // The holder's token of another lock does not work here either.
    let other = unique_key("lock-wrong-token-other");
    let other_lock = acquire(&mut locks, &other, Duration::from_secs(10), Duration::ZERO).await;
    assert!(!release(&mut locks, &name, &other_lock.token).await);
    assert!(release(&mut locks, &name, &held.token).await);
}

/// 32 clients × 100 acquisitions of one lock: never two holders at once (checked in the test
/// and through a Redis key set and cleared inside the critical section), and every fencing
/// token greater than the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_exclusion_under_contention_with_increasing_fencing_tokens() {
    const CLIENTS: usize = 32;
    const ROUNDS: usize = 100;
    let (gateway, _) = start_with(&[]).await;
    let name = unique_key("lock-contended");
    let marker = unique_key("lock-contended-inside");
    let redis = shared_redis().client().await;
    let inside = Arc::new(AtomicBool::new(false));
    let last_fence = Arc::new(AtomicU64::new(0));
    let overlaps = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut locks = LockClient::new(gateway.channel().await);
        let (name, marker, redis) = (name.clone(), marker.clone(), redis.clone());
        let (inside, last_fence, overlaps, counter) = (
            inside.clone(),
            last_fence.clone(),
            overlaps.clone(),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let granted = acquire(
                    &mut locks,
                    &name,
                    Duration::from_secs(30),
                    Duration::from_secs(60),
                )
                .await;
                assert!(granted.acquired, "a 60 s wait should always succeed here");
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let first_in: bool = redis
                    .set(&marker, "1", None, Some(SetOptions::NX), false)
                    .await
                    .map(|reply: Option<String>| reply.is_some())
                    .unwrap();
                if !first_in {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let previous = last_fence.swap(granted.fencing_token, Ordering::SeqCst);
                assert!(
                    granted.fencing_token > previous,
                    "fencing token {} after {previous}",
                    granted.fencing_token
                );
                counter.fetch_add(1, Ordering::SeqCst);
                let _: i64 = redis.del(&marker).await.unwrap();
                inside.store(false, Ordering::SeqCst);
                assert!(release(&mut locks, &name, &granted.token).await);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    assert_eq!(counter.load(Ordering::SeqCst), (CLIENTS * ROUNDS) as u64);
}

/// A waiter is woken by the release, not by polling: it gets the lock within 50 ms of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_acquires_promptly_after_the_release() {
    let (gateway, mut locks) = start().await;
    let mut latencies = Vec::new();
    for round in 0..10 {
        let name = unique_key(&format!("lock-wake-{round}"));
        let held = acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
        let mut waiter_client = LockClient::new(gateway.channel().await);
        let waiter_name = name.clone();
        let waiter = tokio::spawn(async move {
            let granted = acquire(
                &mut waiter_client,
                &waiter_name,
                Duration::from_secs(30),
                Duration::from_secs(20),
            )
            .await;
            (granted, Instant::now())
        });
        wait_for_waiters(&mut locks, &name, 1, Duration::from_secs(10)).await;
        // Past the first backoff steps, so only the wake-up can explain a quick acquisition.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let released_at = Instant::now();
        assert!(release(&mut locks, &name, &held.token).await);
        let (granted, acquired_at) = waiter.await.unwrap();
        assert!(granted.acquired);
        assert!(granted.fencing_token > held.fencing_token);
        latencies.push(acquired_at - released_at);
    }
    latencies.sort();
    eprintln!("hand-off latencies: {latencies:?}");
    // Generous for a loaded 2-core machine; the backoff at this point is 400 ms or more.
    assert!(
        latencies[latencies.len() / 2] < Duration::from_millis(50),
        "{latencies:?}"
    );
    assert!(
        latencies[latencies.len() - 1] < Duration::from_millis(250),
        "{latencies:?}"
    );
}

/// Waiters queued in a known order get the lock in that order; a newcomer without waiting
/// does not jump the queue, and a waiter whose call is cancelled is skipped at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_arrival_order_and_a_cancelled_one_is_skipped() {
    let (gateway, mut locks) = start().await;
    let name = unique_key("lock-fifo");
    let held = acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    let (order_sender, mut order) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for index in 0..4u32 {
        let mut client = LockClient::new(gateway.channel().await);
        let (waiter_name, order_sender) = (name.clone(), order_sender.clone());
        waiters.push(tokio::spawn(async move {
            let name = waiter_name;
            let granted = acquire(
                &mut client,
                &name,
                Duration::from_secs(30),
                Duration::from_secs(20),
            )
            .await;
            assert!(granted.acquired);
            order_sender.send(index).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(release(&mut client, &name, &granted.token).await);
        }));
        wait_for_waiters(&mut locks, &name, index + 1, Duration::from_secs(10)).await;
    }
    // Waiter 1 gives up (its call is dropped): its place goes at once.
    waiters[1].abort();
    wait_for_waiters(&mut locks, &name, 3, Duration::from_secs(10)).await;
    // A free-riding acquisition without waiting is refused while others queue.
    assert!(release(&mut locks, &name, &held.token).await);
    let late = acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    assert!(!late.acquired, "a newcomer jumped the queue: {late:?}");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(
            tokio::time::timeout(Duration::from_secs(10), order.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(seen, vec![0, 2, 3]);
}

/// A holder that stops renewing: its lease ends, and nobody gets the lock before the lock
/// delay has passed too; a release, by contrast, frees it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_keeps_the_lock_closed_for_the_lock_delay() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("lock-delay");
    let ttl = Duration::from_millis(300);
    let delay = Duration::from_millis(700);
    let mut request = acquire_request(&name, ttl, Duration::ZERO);
    request.lock_delay = Some(duration(delay));
    let started = Instant::now();
    let paused = locks.acquire(request.clone()).await.unwrap().into_inner();
    assert!(paused.acquired);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = inspect(&mut locks, &name).await;
    assert!(!status.held, "the lease ran out");
    assert!(status.delay_remaining.is_some(), "inside the lock delay");
    let waiter = acquire(
        &mut locks,
        &name,
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .await;
    assert!(waiter.acquired);
    assert!(
        started.elapsed() >= ttl + delay,
        "granted after {:?}, before ttl + lock_delay",
        started.elapsed()
    );
    assert!(waiter.fencing_token > paused.fencing_token);
    // A release ends the delay at once.
    assert!(release(&mut locks, &name, &waiter.token).await);
    let released = locks.acquire(request).await.unwrap().into_inner();
    assert!(released.acquired, "no delay after a release");
}

/// KeyValue.Transaction with `lock_held` commits while the token holds the lock and is refused
/// once its lease ran out.
#[tokio::test]
async fn a_lock_held_guard_commits_only_while_the_lock_is_held() {
    let (gateway, mut kv) = start_with(&[]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let name = unique_key("lock-guard");
    let granted = acquire(
        &mut locks,
        &name,
        Duration::from_millis(300),
        Duration::ZERO,
    )
    .await;
    let key = format!("orders:{}:total", granted.hash_tag);
    let guarded = |value: &str, token: &str| pb::KeyValueTransactionRequest {
        guards: vec![pb::TransactionGuard {
            guard: Some(Guard::LockHeld(pb::transaction_guard::LockHeld {
                name: name.clone(),
                token: token.to_owned(),
            })),
        }],
        ops: vec![pb::TransactionOperation {
            op: Some(Op::Set(pb::transaction_operation::Set {
                key: key.clone(),
                value: value.as_bytes().to_vec().into(),
                ttl: None,
            })),
        }],
    };
    let committed = kv
        .transaction(guarded("1", &granted.token))
        .await
        .unwrap()
        .into_inner();
    assert!(committed.committed, "{committed:?}");

    let forged = kv
        .transaction(guarded("2", &"f".repeat(32)))
        .await
        .unwrap()
        .into_inner();
    assert!(!forged.committed);
    assert_eq!(forged.failed_guard, Some(0));

    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = kv
        .transaction(guarded("3", &granted.token))
        .await
        .unwrap()
        .into_inner();
    assert!(!late.committed, "committed after the lease ran out");
    assert_eq!(late.failed_guard, Some(0));
    let stored = kv
        .get(pb::KeyValueGetRequest {
            key: key.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.value.as_ref(), b"1");

    assert_status(
        kv.transaction(guarded("4", "not-a-token")).await,
        Code::InvalidArgument,
        "guards[0].lock_held.token",
    );
}

/// A wait longer than the call's deadline ends by the deadline, and leaves no waiter queued.
#[tokio::test]
async fn a_wait_never_outlives_the_call_deadline() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("lock-deadline");
    let held = acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    let started = Instant::now();
    let outcome = locks
        .acquire(with_deadline(
            acquire_request(&name, Duration::from_secs(30), Duration::from_secs(20)),
            Duration::from_millis(500),
        ))
        .await;
    let took = started.elapsed();
    match outcome {
        Ok(response) => assert!(!response.into_inner().acquired),
        Err(status) => assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}"),
    }
    assert!(took < Duration::from_millis(600), "answered after {took:?}");
    wait_for_waiters(&mut locks, &name, 0, Duration::from_secs(10)).await;
    // wait_timeout shorter than the deadline: acquired=false when it runs out.
    let started = Instant::now();
    let short = acquire(
        &mut locks,
        &name,
        Duration::from_secs(30),
        Duration::from_millis(300),
    )
    .await;
    assert!(!short.acquired);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(release(&mut locks, &name, &held.token).await);
}

/// An acquisition sent to a Redis that hangs (its outcome unknown to the caller) does not
/// leave a phantom holder: once Redis answers again, the gateway releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquisition_with_an_unknown_outcome_leaves_no_holder() {
    let redis = common::RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let name = unique_key("lock-unknown");
    redis.suspend();
    let started = Instant::now();
    let outcome = locks
        .acquire(with_deadline(
            acquire_request(&name, Duration::from_secs(30), Duration::ZERO),
            Duration::from_millis(500),
        ))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered after {:?}",
        started.elapsed()
    );
    // The command reached Redis' socket; it runs when Redis resumes.
    redis.resume();
    assert_code(outcome, Code::DeadlineExceeded);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = inspect(&mut locks, &name).await;
        if !status.held {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unconfirmed acquisition still holds the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = acquire(&mut locks, &name, Duration::from_secs(5), Duration::ZERO).await;
    assert!(next.acquired);
}

#[tokio::test]
async fn bad_lock_requests_are_invalid_argument_naming_the_field() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("lock-bad");
    let cases: Vec<(pb::LockAcquireRequest, &str)> = vec![
        (
            acquire_request("", Duration::from_secs(1), Duration::ZERO),
            "name",
        ),
        (
            acquire_request(&"n".repeat(2000), Duration::from_secs(1), Duration::ZERO),
            "name",
        ),
        (
            pb::LockAcquireRequest {
                ttl: None,
                ..acquire_request(&name, Duration::from_secs(1), Duration::ZERO)
            },
            "ttl",
        ),
        (
            pb::LockAcquireRequest {
                ttl: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..acquire_request(&name, Duration::from_secs(1), Duration::ZERO)
            },
            "ttl",
        ),
        (
            acquire_request(&name, Duration::from_secs(400 * 86_400), Duration::ZERO),
            "ttl",
        ),
        (
            pb::LockAcquireRequest {
                wait_timeout: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..acquire_request(&name, Duration::from_secs(1), Duration::ZERO)
            },
            "wait_timeout",
        ),
        (
            acquire_request(&name, Duration::from_secs(1), Duration::from_secs(7200)),
            "wait_timeout",
        ),
        (
            pb::LockAcquireRequest {
                lock_delay: Some(duration(Duration::from_secs(7200))),
                ..acquire_request(&name, Duration::from_secs(1), Duration::ZERO)
            },
            "lock_delay",
        ),
    ];
    for (request, field) in cases {
        assert_status(locks.acquire(request).await, Code::InvalidArgument, field);
    }
    for token in ["", "xyz", &"0".repeat(33)] {
        assert_status(
            locks
                .release(pb::LockReleaseRequest {
                    name: name.clone(),
                    token: token.to_owned(),
                })
                .await,
            Code::InvalidArgument,
            "token",
        );
    }
    assert_status(
        locks
            .extend(pb::LockExtendRequest {
                name: name.clone(),
                token: "0".repeat(32),
                ttl: None,
            })
            .await,
        Code::InvalidArgument,
        "ttl",
    );
    assert_status(
        locks
            .inspect(pb::LockInspectRequest {
                name: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "name",
    );
    // The server keeps serving.
    assert!(
        acquire(&mut locks, &name, Duration::from_secs(1), Duration::ZERO)
            .await
            .acquired
    );
}

/// Lock keys live in the reserved key space: a KeyValue caller can neither see nor touch
/// them, and names with braces work (the tag is a hash).
#[tokio::test]
async fn lock_keys_are_internal_and_any_name_works() {
    let (gateway, mut kv) = start_with(&[]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let prefix = unique_key("lock-names");
    for suffix in ["{braced}", "}odd", "a{b}c", "ünïcode ☃", "__gw:lock:x"] {
        let name = format!("{prefix}{suffix}");
        let granted = acquire(&mut locks, &name, Duration::from_secs(5), Duration::ZERO).await;
        assert!(granted.acquired, "{name}");
        assert!(release(&mut locks, &name, &granted.token).await, "{name}");
    }
    let name = format!("{prefix}-held");
    let granted = acquire(&mut locks, &name, Duration::from_secs(5), Duration::ZERO).await;
    let keys = shared_redis().keys(&format!("__gw:lock:*{name}")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].contains(&granted.hash_tag),
        "{} in {}",
        granted.hash_tag,
        keys[0]
    );
    assert_status(
        kv.delete(pb::KeyValueDeleteRequest { keys: keys.clone() })
            .await,
        Code::InvalidArgument,
        "keys[0]",
    );
    assert!(inspect(&mut locks, &name).await.held);
}

/// Many waiters share the gateway's one pub/sub subscription, and a release wakes one of
/// them: exactly one wake-up is published per release, naming the next waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_one_subscription_and_a_release_wakes_only_the_next() {
    const WAITERS: u32 = 40;
    let redis = common::RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let name = unique_key("lock-one-subscription");
    let held = acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        let mut client = locks.clone();
        let name = name.clone();
        waiters.push(tokio::spawn(async move {
            acquire(
                &mut client,
                &name,
                Duration::from_secs(30),
                Duration::from_secs(20),
            )
            .await
        }));
    }
    wait_for_waiters(&mut locks, &name, WAITERS, Duration::from_secs(10)).await;

    // One subscriber connection in Redis for all of them (polled: it connects in the
    // background at start).
    let admin = redis.client().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let clients: String = admin
            .client_list::<String, String>(None, None)
            .await
            .unwrap();
        let subscribers = common::pubsub_clients_besides_near_cache(&clients);
        assert!(subscribers <= 1, "{clients}");
        if subscribers == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no subscriber: {clients}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Watch the wake channel: one message per release.
    let watcher = redis.client().await.clone_new();
    watcher.init().await.unwrap();
    let mut messages = watcher.message_rx();
    watcher.subscribe("__gw:lock:wake").await.unwrap();
    // The watcher hears the channel before the release: probes of our own (gateways ignore ids
    // that are not their waiters') until Redis counts two subscribers, the gateway's and the
    // watcher, and a probe comes back; then the probes still under way are drained.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let receivers: i64 = admin.publish("__gw:lock:wake", "probe").await.unwrap();
        if receivers >= 2
            && let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_secs(1), messages.recv()).await
        {
            assert_eq!(message.value.as_str().as_deref(), Some("probe"));
            break;
        }
        assert!(Instant::now() < deadline, "the watcher never heard a probe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Ok(Ok(message)) =
        tokio::time::timeout(Duration::from_millis(100), messages.recv()).await
    {
        assert_eq!(message.value.as_str().as_deref(), Some("probe"));
    }
    assert!(release(&mut locks, &name, &held.token).await);
    let first = tokio::time::timeout(Duration::from_secs(5), messages.recv())
        .await
        .expect("a wake-up is published")
        .unwrap();
    assert_eq!(
        first.value.as_str().map(|id| id.len()),
        Some(32),
        "{first:?}"
    );
    // The woken waiter takes the lock (and releases nothing): no further wake-up follows.
    let more = tokio::time::timeout(Duration::from_millis(300), messages.recv()).await;
    assert!(more.is_err(), "a second wake-up for one release: {more:?}");
    let status = inspect(&mut locks, &name).await;
    assert!(status.held);
    assert_eq!(status.waiters, WAITERS - 1);
    for waiter in waiters {
        waiter.abort();
    }
}

/// A waiter whose gateway dies (SIGKILL: nothing is cleaned up) holds its place only until its
/// lease runs out; the waiter behind it then gets the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_gateways_waiter_does_not_block_the_queue() {
    let url = shared_redis().url();
    let (gateway, _) = start_with(&[]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let name = unique_key("lock-dead-waiter");
    let held = acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;

    let mut doomed = common::process::start_gateway_process(&["--redis-url", &url], &[]).await;
    let mut doomed_locks =
        LockClient::new(common::connect_channel(doomed.addr, Duration::from_secs(10)).await);
    let doomed_name = name.clone();
    let _doomed_waiter = tokio::spawn(async move {
        doomed_locks
            .acquire(acquire_request(
                &doomed_name,
                Duration::from_secs(30),
                Duration::from_secs(60),
            ))
            .await
    });
    wait_for_waiters(&mut locks, &name, 1, Duration::from_secs(10)).await;
    let mut behind = locks.clone();
    let behind_name = name.clone();
    let survivor = tokio::spawn(async move {
        acquire(
            &mut behind,
            &behind_name,
            Duration::from_secs(30),
            Duration::from_secs(30),
        )
        .await
    });
    wait_for_waiters(&mut locks, &name, 2, Duration::from_secs(10)).await;

    doomed.child.start_kill().unwrap();
    doomed.child.wait().await.unwrap();
    let released_at = Instant::now();
    assert!(release(&mut locks, &name, &held.token).await);
    let granted = tokio::time::timeout(Duration::from_secs(15), survivor)
        .await
        .expect("the waiter behind a dead one gets the lock")
        .unwrap();
    assert!(granted.acquired);
    let waited = released_at.elapsed();
    eprintln!("acquired {waited:?} after the release, behind a dead waiter");
    // The dead waiter's lease (5 s from its last retry) plus one retry interval.
    assert!(waited < Duration::from_secs(8), "{waited:?}");
}
