//! Lock.Hold against a real redis-server: the lease renewed for as long as the stream is open,
//! released at once when the client drops the stream (also while it waits in the queue), `lost`
//! when the lock key vanishes behind its back, when the gateway drains for shutdown (the lock is
//! released first) and when Redis stays unreachable past the lease; a busy lock without a wait
//! (`lost`, no `acquired`) and with one (queued, then `acquired`); fair arrival-order service of
//! waiters spread over two gateway processes, with a cancelled waiter skipped; and bad input.

mod common;

use std::time::{Duration, Instant};

use common::locks::{Locks, acquire, inspect, release, start, wait_for_waiters};
use common::process::{GatewayProcess, start_gateway_process};
use common::{
    Gateway, RedisServer, assert_status, connect_channel, duration, shared_redis, unique_key,
};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::lock_client::LockClient;
use redis_gateway::pb::lock_hold_response::{Acquired, Event, Lost};
use tonic::Code;
use tonic::Streaming;

type HoldStream = Streaming<pb::LockHoldResponse>;

/// How long a test waits for an event that should come at once (loaded 2-core machine).
const PROMPTLY: Duration = Duration::from_secs(5);

fn hold_request(name: &str, ttl: Duration, wait: Duration) -> pb::LockHoldRequest {
    pb::LockHoldRequest {
        name: name.to_owned(),
        ttl: Some(duration(ttl)),
        wait_timeout: (!wait.is_zero()).then(|| duration(wait)),
        owner: "hold-test".into(),
        lock_delay: None,
    }
}

/// Opens a Hold stream (the call itself must succeed; events come on the stream).
async fn hold(locks: &mut Locks, name: &str, ttl: Duration, wait: Duration) -> HoldStream {
    locks
        .hold(hold_request(name, ttl, wait))
        .await
        .expect("Hold opens a stream")
        .into_inner()
}

/// The next event of `stream`, or `None` when the stream ended cleanly; fails if nothing comes
/// within `within` or the stream ends with an error status.
async fn next_event(stream: &mut HoldStream, within: Duration) -> Option<Event> {
    let message = tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no Hold event within {within:?}"))
        .expect("the Hold stream ends without an error status");
    message.map(|message| message.event.expect("every Hold message carries an event"))
}

async fn expect_acquired(stream: &mut HoldStream, within: Duration) -> Acquired {
    match next_event(stream, within).await {
        Some(Event::Acquired(acquired)) => acquired,
        other => panic!("expected `acquired`, got {other:?}"),
    }
}

async fn expect_lost(stream: &mut HoldStream, within: Duration) -> Lost {
    match next_event(stream, within).await {
        Some(Event::Lost(lost)) => lost,
        other => panic!("expected `lost`, got {other:?}"),
    }
}

/// The stream ends (cleanly) after its last event.
async fn expect_end(stream: &mut HoldStream) {
    let after = next_event(stream, PROMPTLY).await;
    assert!(
        after.is_none(),
        "the stream went on after `lost`: {after:?}"
    );
}

/// Polls Inspect until `name` is free; returns how long that took, failing after `within`.
async fn wait_until_free(locks: &mut Locks, name: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if !inspect(locks, name).await.held {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{name} still held after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The lock's own key in Redis: `__gw:lock:{tag}:<name>` (default namespace).
fn lock_key(hash_tag: &str, name: &str) -> String {
    let tag = hash_tag
        .strip_prefix('{')
        .and_then(|tag| tag.strip_suffix('}'))
        .unwrap_or_else(|| panic!("hash tag {hash_tag:?} has no braces"));
    format!("__gw:lock:{{{tag}}}:{name}")
}

fn millis(timestamp: &Option<prost_types::Timestamp>) -> i64 {
    let timestamp = timestamp.as_ref().expect("timestamp set");
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

/// A Hold with a 300 ms lease keeps the lock for 1.2 s (4 × ttl): Inspect shows it held with
/// the same fencing token throughout, nobody else gets it, and `renewed` events arrive with
/// ever later lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_keeps_the_lock_past_several_ttls_while_the_stream_is_open() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("hold-keeps");
    let ttl = Duration::from_millis(300);
    let mut stream = hold(&mut locks, &name, ttl, Duration::ZERO).await;
    let acquired = expect_acquired(&mut stream, PROMPTLY).await;
    assert_eq!(acquired.token.len(), 32);
    assert!(acquired.fencing_token >= 1);
    assert!(acquired.hash_tag.starts_with('{') && acquired.hash_tag.ends_with('}'));
    let first_lease_end = millis(&acquired.expires_at);

    let started = Instant::now();
    let keep = ttl * 4;
    let mut renewals = Vec::new();
    let mut checks = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < keep {
        tokio::select! {
            message = stream.message() => {
                let message = message
                    .expect("the Hold stream stays healthy")
                    .expect("the Hold stream stays open");
                match message.event {
                    Some(Event::Renewed(renewed)) => renewals.push(millis(&renewed.expires_at)),
                    other => panic!("only `renewed` events while held, got {other:?}"),
                }
            }
            _ = tick.tick() => {
                let status = inspect(&mut locks, &name).await;
                assert!(status.held, "the lock was free {:?} into the hold", started.elapsed());
                assert_eq!(status.fencing_token, acquired.fencing_token, "another acquisition");
                assert_eq!(status.owner, "hold-test");
                checks += 1;
            }
        }
    }
    let rival = acquire(&mut locks, &name, ttl, Duration::ZERO).await;
    assert!(!rival.acquired, "a rival took the held lock");
    let status = inspect(&mut locks, &name).await;
    assert!(status.held, "free after {:?}", started.elapsed());
    assert_eq!(status.fencing_token, acquired.fencing_token);
    assert!(checks >= 5, "only {checks} Inspect checks ran");

    // About one renewal per ttl/3: 12 in 1.2 s; 3 is the floor that still proves renewal.
    assert!(renewals.len() >= 3, "renewals: {renewals:?}");
    assert!(
        renewals.windows(2).all(|pair| pair[0] <= pair[1]),
        "lease ends went back: {renewals:?}"
    );
    let last = *renewals.last().unwrap();
    assert!(
        last > first_lease_end + 2 * ttl.as_millis() as i64,
        "the lease end moved only from {first_lease_end} to {last}"
    );
}

/// Dropping the Hold stream (the client cancels) releases the lock at once, long before its
/// 30 s lease could run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_hold_stream_releases_the_lock_at_once() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("hold-dropped");
    let mut stream = hold(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    let acquired = expect_acquired(&mut stream, PROMPTLY).await;
    let status = inspect(&mut locks, &name).await;
    assert!(status.held);
    assert_eq!(status.fencing_token, acquired.fencing_token);

    drop(stream);
    let took = wait_until_free(&mut locks, &name, Duration::from_secs(1)).await;
    eprintln!("released {took:?} after the stream was dropped");
    let next = acquire(&mut locks, &name, Duration::from_secs(5), Duration::ZERO).await;
    assert!(next.acquired, "the lock is not free for the next caller");
    assert!(next.fencing_token > acquired.fencing_token);
    // The dropped holder's token no longer holds anything.
    assert!(!release(&mut locks, &name, &acquired.token).await);
}

/// A Hold that is still waiting in the queue leaves it at once when its stream is dropped,
/// and never takes the lock afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_waiting_hold_leaves_the_queue_at_once() {
    let (gateway, mut locks) = start().await;
    let name = unique_key("hold-waiting-dropped");
    let held = acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    assert!(held.acquired);
    let mut waiter_client = LockClient::new(gateway.channel().await);
    let stream = hold(
        &mut waiter_client,
        &name,
        Duration::from_secs(30),
        Duration::from_secs(20),
    )
    .await;
    wait_for_waiters(&mut locks, &name, 1, Duration::from_secs(10)).await;

    drop(stream);
    // The queue lease (5 s) would end a forgotten place too, but much later.
    wait_for_waiters(&mut locks, &name, 0, Duration::from_millis(1500)).await;
    assert!(release(&mut locks, &name, &held.token).await);
    let next = acquire(&mut locks, &name, Duration::from_secs(5), Duration::ZERO).await;
    assert!(next.acquired, "the dropped waiter took the lock");
}

/// Deleting the lock key behind the Hold's back: the next renewal finds the lease gone, the
/// client gets `lost` and the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_reports_lost_when_its_lock_key_is_deleted() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("hold-deleted");
    let ttl = Duration::from_millis(600);
    let mut stream = hold(&mut locks, &name, ttl, Duration::ZERO).await;
    let acquired = expect_acquired(&mut stream, PROMPTLY).await;

    let redis = shared_redis().client().await;
    let key = lock_key(&acquired.hash_tag, &name);
    let deleted: i64 = redis.del(&key).await.unwrap();
    assert_eq!(deleted, 1, "no lock key {key}");
    let deleted_at = Instant::now();

    // `renewed` events already on their way may come first; then `lost`, within about ttl/3.
    let lost = loop {
        match next_event(&mut stream, PROMPTLY).await {
            Some(Event::Renewed(_)) => continue,
            Some(Event::Lost(lost)) => break lost,
            other => panic!("expected `lost`, got {other:?}"),
        }
    };
    let took = deleted_at.elapsed();
    assert!(took < ttl + Duration::from_secs(2), "`lost` after {took:?}");
    assert!(
        lost.reason.contains("expired or the lock taken"),
        "reason: {:?}",
        lost.reason
    );
    expect_end(&mut stream).await;
    assert!(!inspect(&mut locks, &name).await.held);
}

/// A graceful shutdown with a Hold open: the gateway releases the lock (before its Redis pools
/// close), tells the client `lost` (draining), ends the stream, and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_releases_held_locks_and_reports_lost() {
    let gateway = Gateway::start(&shared_redis().url(), &["--drain-timeout", "10s"]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let name = unique_key("hold-drain");
    let mut stream = hold(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    let acquired = expect_acquired(&mut stream, PROMPTLY).await;
    let redis = shared_redis().client().await;
    let key = lock_key(&acquired.hash_tag, &name);
    let exists: i64 = redis.exists(&key).await.unwrap();
    assert_eq!(exists, 1, "no lock key {key}");

    gateway.shutdown.cancel();
    let lost = expect_lost(&mut stream, PROMPTLY).await;
    assert!(
        lost.reason.contains("draining"),
        "reason: {:?}",
        lost.reason
    );
    expect_end(&mut stream).await;
    tokio::time::timeout(Duration::from_secs(15), gateway.stopped())
        .await
        .expect("the gateway stops after the drain")
        .expect("the gateway stops cleanly");

    // Released, not left to expire: the 30 s lease would still be running.
    let exists: i64 = redis.exists(&key).await.unwrap();
    assert_eq!(exists, 0, "the lock key outlived the gateway");
}

/// A busy lock: a Hold without wait_timeout gets `lost` at once and no `acquired`; a Hold with
/// one waits in the queue and gets `acquired` once the holder releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_a_busy_lock_is_lost_without_a_wait_and_acquired_after_one() {
    let (gateway, mut locks) = start().await;
    let name = unique_key("hold-busy");
    let held = acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    assert!(held.acquired);

    let started = Instant::now();
    let mut refused = hold(&mut locks, &name, Duration::from_secs(5), Duration::ZERO).await;
    let lost = expect_lost(&mut refused, PROMPTLY).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "`lost` after {:?}",
        started.elapsed()
    );
    assert!(lost.reason.contains("busy"), "reason: {:?}", lost.reason);
    expect_end(&mut refused).await;
    let status = inspect(&mut locks, &name).await;
    assert_eq!(
        status.fencing_token, held.fencing_token,
        "the holder changed"
    );
    assert_eq!(status.waiters, 0, "a Hold without a wait queued");

    let mut waiter_client = LockClient::new(gateway.channel().await);
    let mut waiting = hold(
        &mut waiter_client,
        &name,
        Duration::from_secs(30),
        Duration::from_secs(20),
    )
    .await;
    wait_for_waiters(&mut locks, &name, 1, Duration::from_secs(10)).await;
    let status = inspect(&mut locks, &name).await;
    assert!(status.held);
    assert_eq!(status.fencing_token, held.fencing_token, "taken while busy");

    assert!(release(&mut locks, &name, &held.token).await);
    let acquired = expect_acquired(&mut waiting, PROMPTLY).await;
    assert!(acquired.fencing_token > held.fencing_token);
    let status = inspect(&mut locks, &name).await;
    assert!(status.held);
    assert_eq!(status.fencing_token, acquired.fencing_token);
    assert_eq!(status.waiters, 0);
    assert_eq!(status.owner, "hold-test");
}

/// Redis goes away while a Hold runs: renewals fail, and once the lease has run out the
/// client gets `lost` (unreachable) and the stream ends — not before the lease is over, and
/// not much after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_reports_lost_when_redis_is_unreachable_past_the_lease() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut locks = LockClient::new(gateway.channel().await);
    let name = unique_key("hold-unreachable");
    let ttl = Duration::from_millis(600);
    let called = Instant::now();
    let mut stream = hold(&mut locks, &name, ttl, Duration::ZERO).await;
    expect_acquired(&mut stream, PROMPTLY).await;

    redis.stop();
    let stopped = Instant::now();
    let lost = loop {
        match next_event(&mut stream, PROMPTLY).await {
            Some(Event::Renewed(_)) => continue,
            Some(Event::Lost(lost)) => break lost,
            other => panic!("expected `lost`, got {other:?}"),
        }
    };
    let after_stop = stopped.elapsed();
    let after_call = called.elapsed();
    eprintln!("`lost` {after_stop:?} after Redis stopped, {after_call:?} after the call");
    assert!(
        lost.reason.contains("unreachable"),
        "reason: {:?}",
        lost.reason
    );
    // The lease began after the call was sent, so it cannot have ended before `called + ttl`.
    assert!(
        after_call >= ttl - Duration::from_millis(20),
        "`lost` {after_call:?} into a {ttl:?} lease"
    );
    assert!(
        after_stop < ttl + Duration::from_secs(2),
        "`lost` only {after_stop:?} after Redis stopped"
    );
    expect_end(&mut stream).await;
}

/// A gateway binary over the shared Redis, and a Lock client to it.
async fn lock_process() -> (GatewayProcess, Locks) {
    let url = shared_redis().url();
    let process = start_gateway_process(&["--redis-url", &url], &[]).await;
    let channel = connect_channel(process.addr, Duration::from_secs(20)).await;
    (process, LockClient::new(channel))
}

/// Waiters queued alternately through two gateway processes are served in arrival order
/// across both; a waiter whose call is cancelled leaves the queue at once and is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_two_gateway_processes_are_served_in_arrival_order() {
    const WAITERS: usize = 8;
    const CANCELLED: usize = 3;
    let ((_first, first), (_second, second)) = tokio::join!(lock_process(), lock_process());
    let clients = [first, second];
    let mut locks = clients[0].clone();
    let name = unique_key("hold-fair");
    let held = acquire(&mut locks, &name, Duration::from_secs(60), Duration::ZERO).await;
    assert!(held.acquired);

    let (order_sender, mut order) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for index in 0..WAITERS {
        let mut client = clients[index % 2].clone();
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
            assert!(granted.acquired, "waiter {index} gave up");
            order_sender.send(index).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(release(&mut client, &name, &granted.token).await);
        }));
        // Arrival order is known: the next waiter starts only once this one is queued.
        wait_for_waiters(&mut locks, &name, index as u32 + 1, Duration::from_secs(10)).await;
    }
    drop(order_sender);

    waiters[CANCELLED].abort();
    let cancelled_at = Instant::now();
    // At once: a forgotten place would count until its 5 s queue lease ran out.
    wait_for_waiters(
        &mut locks,
        &name,
        WAITERS as u32 - 1,
        Duration::from_millis(1500),
    )
    .await;
    eprintln!("the cancelled waiter left in {:?}", cancelled_at.elapsed());

    assert!(release(&mut locks, &name, &held.token).await);
    let mut seen = Vec::new();
    while let Some(index) = tokio::time::timeout(Duration::from_secs(30), order.recv())
        .await
        .expect("every waiter got the lock in time")
    {
        seen.push(index);
    }
    let expected: Vec<usize> = (0..WAITERS).filter(|&index| index != CANCELLED).collect();
    assert_eq!(seen, expected, "served out of arrival order");
    for (index, waiter) in waiters.into_iter().enumerate() {
        match waiter.await {
            Ok(()) => assert_ne!(index, CANCELLED, "the cancelled waiter ran to the end"),
            Err(err) => assert!(
                index == CANCELLED && err.is_cancelled(),
                "waiter {index}: {err}"
            ),
        }
    }
    let status = inspect(&mut locks, &name).await;
    assert!(!status.held, "the last waiter did not release");
    assert_eq!(status.waiters, 0);
}

/// Bad Hold input is refused before any stream starts, as INVALID_ARGUMENT naming the field;
/// the server keeps serving.
#[tokio::test]
async fn bad_hold_requests_are_invalid_argument_naming_the_field() {
    let (_gateway, mut locks) = start().await;
    let name = unique_key("hold-bad");
    let valid = || hold_request(&name, Duration::from_secs(5), Duration::ZERO);
    let negative = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    let cases: Vec<(pb::LockHoldRequest, &str)> = vec![
        (
            pb::LockHoldRequest {
                name: String::new(),
                ..valid()
            },
            "name",
        ),
        (
            pb::LockHoldRequest {
                ttl: None,
                ..valid()
            },
            "ttl",
        ),
        (
            pb::LockHoldRequest {
                ttl: Some(duration(Duration::ZERO)),
                ..valid()
            },
            "ttl",
        ),
        (
            pb::LockHoldRequest {
                wait_timeout: negative,
                ..valid()
            },
            "wait_timeout",
        ),
        (
            pb::LockHoldRequest {
                lock_delay: negative,
                ..valid()
            },
            "lock_delay",
        ),
        (
            pb::LockHoldRequest {
                owner: "o".repeat(2000),
                ..valid()
            },
            "owner",
        ),
    ];
    for (request, field) in cases {
        assert_status(locks.hold(request).await, Code::InvalidArgument, field);
    }
    assert!(
        !inspect(&mut locks, &name).await.held,
        "a refused Hold took the lock"
    );
    // The server keeps serving.
    let mut stream = locks.hold(valid()).await.unwrap().into_inner();
    let acquired = expect_acquired(&mut stream, PROMPTLY).await;
    assert!(acquired.fencing_token >= 1);
}
