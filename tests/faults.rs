//! Redis faults: an outage gives UNAVAILABLE quickly and flips health, a hung Redis never
//! holds a call past its deadline, recovery needs no gateway restart, and writes that are not
//! idempotent are never replayed after a reconnect.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, RedisServer, unique_key, wait_for_held_commands, with_deadline};
use fred::prelude::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redis_gateway::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const KEYVALUE_SERVICE: &str = "redisgateway.v1.KeyValue";

fn get(key: &str) -> pb::KeyValueGetRequest {
    pb::KeyValueGetRequest {
        key: key.to_owned(),
        ..Default::default()
    }
}

fn set(key: &str, value: &'static [u8]) -> pb::KeyValueSetRequest {
    pb::KeyValueSetRequest {
        key: key.to_owned(),
        value: Bytes::from_static(value),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_unavailable_within_the_deadline_and_recovers_by_itself() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("outage");
    kv.set(set(&key, b"before"))
        .await
        .expect("set before the outage");
    assert_eq!(
        gateway.health_status(KEYVALUE_SERVICE).await,
        ServingStatus::Serving
    );

    redis.stop();
    let deadline = Duration::from_secs(2);
    for _ in 0..3 {
        let started = Instant::now();
        let status = kv
            .get(with_deadline(get(&key), deadline))
            .await
            .expect_err("Redis is down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            started.elapsed() < deadline,
            "took {:?}, past the deadline",
            started.elapsed()
        );
        let write = kv
            .set(with_deadline(set(&key, b"during"), deadline))
            .await
            .expect_err("Redis is down");
        assert_eq!(write.code(), Code::Unavailable, "{write:?}");
    }
    gateway
        .wait_for_health(ServingStatus::NotServing, Duration::from_secs(5))
        .await;
    assert_eq!(
        gateway.health_status(KEYVALUE_SERVICE).await,
        ServingStatus::NotServing
    );
    // The process itself is fine: a liveness probe must not restart it for Redis' outage.
    assert_eq!(
        gateway.health_status(redis_gateway::server::LIVENESS).await,
        ServingStatus::Serving
    );

    redis.restart();
    gateway
        .wait_for_health(ServingStatus::Serving, Duration::from_secs(20))
        .await;
    assert_eq!(
        gateway.health_status(KEYVALUE_SERVICE).await,
        ServingStatus::Serving
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match kv.set(set(&key, b"after")).await {
            Ok(reply) => {
                assert!(reply.into_inner().applied);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(Instant::now() < deadline, "writes did not recover");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let reply = kv.get(get(&key)).await.expect("get after recovery");
    assert_eq!(reply.into_inner().value, Bytes::from_static(b"after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_never_holds_a_call_past_its_deadline() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let pid = Pid::from_raw(redis.pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("pause redis-server");

    let deadline = Duration::from_millis(500);
    let started = Instant::now();
    let read = kv.get(with_deadline(get("hung"), deadline)).await;
    let read_took = started.elapsed();
    let started = Instant::now();
    let write = kv
        .increment(with_deadline(
            pb::KeyValueIncrementRequest {
                key: "hung-counter".into(),
                delta: 1,
                ttl: None,
            },
            deadline,
        ))
        .await;
    let write_took = started.elapsed();
    // A Lua script (here a counter with a TTL) is bounded by the deadline the same way.
    let started = Instant::now();
    let script = kv
        .increment(with_deadline(
            pb::KeyValueIncrementRequest {
                key: "hung-window".into(),
                delta: 1,
                ttl: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
            },
            deadline,
        ))
        .await;
    let script_took = started.elapsed();
    kill(pid, Signal::SIGCONT).expect("resume redis-server");
    let script = script.expect_err("Redis is hung");
    assert_eq!(script.code(), Code::DeadlineExceeded, "{script:?}");

    // The gateway answers before the deadline, with its own status rather than the
    // transport's CANCELLED, and says that the write's outcome is unknown.
    let read = read.expect_err("Redis is hung");
    assert_eq!(read.code(), Code::DeadlineExceeded, "{read:?}");
    assert!(!read.message().contains("may or may not"), "{read:?}");
    let write = write.expect_err("Redis is hung");
    assert_eq!(write.code(), Code::DeadlineExceeded, "{write:?}");
    assert!(
        write.message().contains("may or may not have been applied"),
        "{write:?}"
    );
    for took in [read_took, write_took, script_took] {
        assert!(
            took <= deadline,
            "a call took {took:?} with a {deadline:?} deadline"
        );
    }
    // Once Redis answers again, so does the gateway.
    kv.get(get("hung")).await.expect("answers after resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_cut_off_by_a_dropped_connection_is_not_replayed() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &["--redis-max-connections", "1"]).await;
    let mut kv = gateway.kv().await;
    let admin = redis.client().await;
    let key = unique_key("counter");

    // Hold writes inside Redis (until the UNPAUSE below), send the increment, then kill the
    // gateway's connection while the command waits: fred reconnects, and a replay would apply
    // the increment.
    let _: () = admin
        .custom(fred::cmd!("CLIENT"), vec!["PAUSE", "60000", "WRITE"])
        .await
        .expect("CLIENT PAUSE");
    let increment = tokio::spawn({
        let mut kv = kv.clone();
        let key = key.clone();
        async move {
            kv.increment(with_deadline(
                pb::KeyValueIncrementRequest {
                    key,
                    delta: 1,
                    ttl: None,
                },
                Duration::from_secs(10),
            ))
            .await
        }
    });
    wait_for_held_commands(&admin, "incrby", 1, Duration::from_secs(10)).await;
    let killed: i64 = admin
        .custom(
            fred::cmd!("CLIENT"),
            vec!["KILL", "TYPE", "normal", "SKIPME", "yes"],
        )
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1, "the gateway's connection was not killed");

    let status = increment
        .await
        .unwrap()
        .expect_err("the connection dropped under the increment");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("may or may not have been applied"),
        "{status:?}"
    );

    let _: () = admin
        .custom(fred::cmd!("CLIENT"), vec!["UNPAUSE"])
        .await
        .expect("CLIENT UNPAUSE");
    // The gateway has one Redis connection, and a replay would be the first command on it
    // after the reconnect: a read through the gateway that answers comes after any replay.
    let deadline = Instant::now() + Duration::from_secs(10);
    let read = loop {
        match kv.get(get(&key)).await {
            Ok(reply) => break reply.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "reads did not recover: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(
        !read.found,
        "the increment was replayed after the reconnect: {read:?}"
    );
    let stored: Option<i64> = admin.get(&key).await.unwrap();
    assert_eq!(
        stored, None,
        "the increment was replayed after the reconnect"
    );
    let reply = kv
        .increment(pb::KeyValueIncrementRequest {
            key,
            delta: 1,
            ttl: None,
        })
        .await
        .expect("increments work after the reconnect");
    assert_eq!(reply.into_inner().value, 1);
}

#[tokio::test]
async fn scripts_are_reloaded_after_redis_forgets_them() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let admin = redis.client().await;
    let key = unique_key("noscript");
    let swap =
        |expected: Option<&'static [u8]>, value: &'static [u8]| pb::KeyValueCompareAndSwapRequest {
            key: key.clone(),
            expectation: Some(match expected {
                Some(bytes) => pb::key_value_compare_and_swap_request::Expectation::Expected(
                    Bytes::from_static(bytes),
                ),
                None => pb::key_value_compare_and_swap_request::Expectation::ExpectAbsent(true),
            }),
            value: Bytes::from_static(value),
            ttl: None,
            keep_ttl: false,
        };
    assert!(
        kv.compare_and_swap(swap(None, b"1"))
            .await
            .unwrap()
            .into_inner()
            .swapped
    );
    // As after a Redis restart or failover: the script cache is empty, EVALSHA gets NOSCRIPT.
    let _: () = admin
        .custom(fred::cmd!("SCRIPT"), vec!["FLUSH"])
        .await
        .unwrap();
    let reply = kv
        .compare_and_swap(swap(Some(b"1"), b"2"))
        .await
        .expect("the script is sent again after NOSCRIPT")
        .into_inner();
    assert!(reply.swapped);
    let stored: String = admin.get(&key).await.unwrap();
    assert_eq!(stored, "2");
}

#[tokio::test]
async fn redis_out_of_memory_is_resource_exhausted_and_reads_still_work() {
    let redis = RedisServer::start();
    let admin = redis.client().await;
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("oom");
    kv.set(set(&key, b"small"))
        .await
        .expect("set before the limit");
    let _: () = admin
        .custom(
            fred::cmd!("CONFIG"),
            vec!["SET", "maxmemory-policy", "noeviction"],
        )
        .await
        .unwrap();
    let _: () = admin
        .custom(fred::cmd!("CONFIG"), vec!["SET", "maxmemory", "1"])
        .await
        .unwrap();
    let status = kv
        .set(set(&unique_key("oom"), b"one more"))
        .await
        .expect_err("Redis is over maxmemory");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("out of memory"), "{status:?}");
    let read = kv
        .get(get(&key))
        .await
        .expect("reads still work")
        .into_inner();
    assert_eq!(read.value, Bytes::from_static(b"small"));
}

/// A key as long as the gateway allows (1 KiB), so that each GET of it sent to Redis stands
/// out from the health probe's PINGs (14 bytes) in the bytes Redis has not read.
fn stalled_key() -> String {
    format!("stalled:{}", "x".repeat(1000))
}

/// A Get while Redis is stopped (SIGSTOP), with a 1 s command timeout and a 10 s deadline.
/// Redis resumes once a second attempt (the retry) seems to have reached it (by the bytes it
/// has not read: background commands add a little to them), or after the call has ended.
/// Returns the reply and how many GETs Redis executed once resumed (its command statistics,
/// reset before the stall: exact, whatever else the gateway sent meanwhile).
async fn get_across_a_stall(
    retry_on_timeout: &str,
) -> (Result<pb::KeyValueGetResponse, tonic::Status>, usize) {
    let redis = RedisServer::start();
    let gateway = Gateway::start(
        &redis.url(),
        &[
            "--redis-command-timeout",
            "1s",
            "--redis-retry-on-timeout",
            retry_on_timeout,
        ],
    )
    .await;
    let mut kv = gateway.kv().await;
    let key = stalled_key();
    kv.set(set(&key, b"value")).await.expect("set");
    let admin = redis.client().await;
    let _: () = admin
        .custom(fred::cmd!("CONFIG"), vec!["RESETSTAT"])
        .await
        .expect("reset the command statistics");
    let pid = Pid::from_raw(redis.pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("pause redis-server");
    let call = tokio::spawn({
        let mut kv = kv.clone();
        let key = key.clone();
        async move {
            kv.get(with_deadline(get(&key), Duration::from_secs(10)))
                .await
                .map(tonic::Response::into_inner)
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sent = common::unread_by_redis(redis.port, std::process::id()) / key.len();
        if sent >= 2 || call.is_finished() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Get neither retried nor ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(pid, Signal::SIGCONT).expect("resume redis-server");
    let reply = call.await.unwrap();
    let stats: String = admin
        .custom(fred::cmd!("INFO"), vec!["commandstats"])
        .await
        .expect("command statistics");
    let gets = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().expect("a count"));
    (reply, gets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_retried_once_after_a_timeout_only_when_configured() {
    let (without_retry, attempts) = get_across_a_stall("false").await;
    let without_retry = without_retry.expect_err("no retry");
    assert_eq!(without_retry.code(), Code::Unavailable, "{without_retry:?}");
    assert!(
        without_retry.message().contains("did not answer within"),
        "{without_retry:?}"
    );
    assert_eq!(attempts, 1, "GETs sent without retries configured");

    let (with_retry, attempts) = get_across_a_stall("true").await;
    assert_eq!(attempts, 2, "GETs sent with retries configured");
    let with_retry = with_retry.expect("the retry lands after Redis resumes");
    assert_eq!(with_retry.value, Bytes::from_static(b"value"));
}
