//! KeyValue service behaviour against a real redis-server.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, duration, shared_redis, unique_key};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use redis_gateway::pb;
use redis_gateway::pb::compare_and_swap_request::Expectation;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::ttl_status::State;
use tonic::Code;
use tonic::transport::Channel;

type Kv = KeyValueClient<Channel>;

/// A gateway with default limits over the shared Redis, and a client to it.
async fn start() -> (Gateway, Kv) {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let kv = gateway.kv().await;
    (gateway, kv)
}

/// A gateway with small limits, for the bad-input tests.
async fn start_small() -> (Gateway, Kv) {
    let gateway = Gateway::start(
        &shared_redis().url(),
        &[
            "--max-key-bytes",
            "16",
            "--max-value-bytes",
            "32",
            "--max-batch-items",
            "3",
            "--max-ttl",
            "1h",
        ],
    )
    .await;
    let kv = gateway.kv().await;
    (gateway, kv)
}

/// A direct client to the shared Redis.
async fn direct() -> Client {
    shared_redis().client().await
}

fn secs(n: u64) -> Option<prost_types::Duration> {
    Some(duration(Duration::from_secs(n)))
}

fn millis(n: u64) -> Option<prost_types::Duration> {
    Some(duration(Duration::from_millis(n)))
}

fn as_millis(ttl: &prost_types::Duration) -> i64 {
    ttl.seconds * 1000 + i64::from(ttl.nanos) / 1_000_000
}

// Request builders: the named fields set, everything else default.

fn get_request(key: &str) -> pb::GetRequest {
    pb::GetRequest {
        key: key.to_owned(),
        ..Default::default()
    }
}

fn set_request(key: &str, value: impl AsRef<[u8]>) -> pb::SetRequest {
    pb::SetRequest {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value.as_ref()),
        ..Default::default()
    }
}

fn entry(key: &str, value: impl AsRef<[u8]>) -> pb::KeyValueEntry {
    pb::KeyValueEntry {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value.as_ref()),
    }
}

fn set_many_request(
    entries: Vec<pb::KeyValueEntry>,
    ttl: Option<prost_types::Duration>,
    if_none_exist: bool,
) -> pb::SetManyRequest {
    pb::SetManyRequest {
        entries,
        ttl,
        if_none_exist,
    }
}

fn expire_request(key: &str, ttl: Option<prost_types::Duration>) -> pb::ExpireRequest {
    pb::ExpireRequest {
        key: key.to_owned(),
        ttl,
        ..Default::default()
    }
}

fn increment_request(
    key: &str,
    delta: i64,
    ttl: Option<prost_types::Duration>,
) -> pb::IncrementRequest {
    pb::IncrementRequest {
        key: key.to_owned(),
        delta,
        ttl,
    }
}

fn cas_request(
    key: &str,
    expectation: Expectation,
    value: impl AsRef<[u8]>,
) -> pb::CompareAndSwapRequest {
    pb::CompareAndSwapRequest {
        key: key.to_owned(),
        expectation: Some(expectation),
        value: Bytes::copy_from_slice(value.as_ref()),
        ttl: None,
        keep_ttl: false,
    }
}

async fn set(kv: &mut Kv, key: &str, value: &str) {
    let reply = kv
        .set(pb::SetRequest {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
}

async fn set_with_ttl(kv: &mut Kv, key: &str, value: &str, ttl: Option<prost_types::Duration>) {
    let reply = kv
        .set(pb::SetRequest {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ttl,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
}

async fn get(kv: &mut Kv, key: &str) -> pb::GetResponse {
    kv.get(pb::GetRequest {
        key: key.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// The key's TTL state via GetTtl, with the TTL in milliseconds when expiring.
async fn ttl_of(kv: &mut Kv, key: &str) -> (State, Option<i64>) {
    let reply = kv
        .get_ttl(pb::GetTtlRequest {
            key: key.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    (reply.state(), reply.ttl.as_ref().map(as_millis))
}

/// Asserts that the key is EXPIRING with a TTL in `(low, high]` milliseconds.
async fn assert_expiring(kv: &mut Kv, key: &str, low: i64, high: i64) {
    let (state, ttl) = ttl_of(kv, key).await;
    assert_eq!(state, State::Expiring, "{key}");
    let ttl = ttl.expect("an expiring key reports its TTL");
    assert!(
        ttl > low && ttl <= high,
        "{key}: ttl {ttl} ms not in ({low}, {high}]"
    );
}

async fn assert_persistent(kv: &mut Kv, key: &str) {
    assert_eq!(ttl_of(kv, key).await, (State::Persistent, None), "{key}");
}

/// Polls (bounded) until Get reports the key gone.
async fn wait_until_gone(kv: &mut Kv, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if !get(kv, key).await.found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} still exists after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts INVALID_ARGUMENT whose message starts with the offending field's name.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    field: &str,
) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "message {:?} should name `{field}`",
        status.message()
    );
}

#[track_caller]
fn assert_failed_precondition<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) {
    let status = result.expect_err("expected FAILED_PRECONDITION");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

/// After bad inputs: the same gateway still serves a normal Get.
async fn assert_still_serves(kv: &mut Kv) {
    let key = unique_key("ok");
    direct()
        .await
        .set::<(), _, _>(&key, "fine", None, None, false)
        .await
        .unwrap();
    let got = get(kv, &key).await;
    assert!(got.found);
    assert_eq!(got.value, "fine");
}

async fn rpush(client: &Client, key: &str, value: &str) {
    client
        .custom::<i64, _>(
            CustomCommand::new_static("RPUSH", ClusterHash::FirstKey, false),
            vec![key, value],
        )
        .await
        .unwrap();
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Get / Set

#[tokio::test]
async fn set_then_get_round_trips_binary_values() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("roundtrip");
    let value = Bytes::from_static(b"\x00\xffbinary\n");
    let set = kv
        .set(pb::SetRequest {
            key: key.clone(),
            value: value.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(set.applied);
    let got = kv
        .get(pb::GetRequest {
            key,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, value);
}

#[tokio::test]
async fn get_of_missing_key_is_not_found() {
    let (_gateway, mut kv) = start().await;
    let got = get(&mut kv, &unique_key("missing")).await;
    assert!(!got.found);
    assert!(got.value.is_empty());
    assert!(got.ttl.is_none());
}

#[tokio::test]
async fn empty_value_is_found() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("empty");
    set(&mut kv, &key, "").await;
    let got = get(&mut kv, &key).await;
    assert!(got.found);
    assert!(got.value.is_empty());
}

#[tokio::test]
async fn set_always_overwrites_and_returns_previous() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("always");
    let request = |value: &str, return_previous| pb::SetRequest {
        key: key.clone(),
        value: bytes(value),
        condition: pb::set_request::Condition::Always.into(),
        return_previous,
        ..Default::default()
    };

    let first = kv.set(request("one", true)).await.unwrap().into_inner();
    assert!(first.applied);
    assert!(!first.previous_found);
    assert!(first.previous.is_empty());

    let second = kv.set(request("two", true)).await.unwrap().into_inner();
    assert!(second.applied);
    assert!(second.previous_found);
    assert_eq!(second.previous, "one");

    let third = kv.set(request("three", false)).await.unwrap().into_inner();
    assert!(third.applied);
    assert!(!third.previous_found);
    assert_eq!(get(&mut kv, &key).await.value, "three");
}

#[tokio::test]
async fn set_if_absent_does_not_overwrite() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("nx");
    let request = |value: &str, return_previous| pb::SetRequest {
        key: key.clone(),
        value: bytes(value),
        condition: pb::set_request::Condition::IfAbsent.into(),
        return_previous,
        ..Default::default()
    };

    let created = kv.set(request("first", false)).await.unwrap().into_inner();
    assert!(created.applied);
    let refused = kv.set(request("second", false)).await.unwrap().into_inner();
    assert!(!refused.applied);
    assert_eq!(get(&mut kv, &key).await.value, "first");

    let refused = kv.set(request("third", true)).await.unwrap().into_inner();
    assert!(!refused.applied);
    assert!(refused.previous_found);
    assert_eq!(refused.previous, "first");
    assert_eq!(get(&mut kv, &key).await.value, "first");
}

#[tokio::test]
async fn set_if_absent_with_return_previous_creates_missing_key() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("nx-prev");
    let reply = kv
        .set(pb::SetRequest {
            key: key.clone(),
            value: bytes("new"),
            condition: pb::set_request::Condition::IfAbsent.into(),
            return_previous: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
    assert!(!reply.previous_found);
    assert!(reply.previous.is_empty());
    assert_eq!(get(&mut kv, &key).await.value, "new");
}

#[tokio::test]
async fn set_if_present_only_overwrites_existing_keys() {
    let (_gateway, mut kv) = start().await;
    for return_previous in [false, true] {
        let key = unique_key("xx");
        let request = |value: &str| pb::SetRequest {
            key: key.clone(),
            value: bytes(value),
            condition: pb::set_request::Condition::IfPresent.into(),
            return_previous,
            ..Default::default()
        };
        let refused = kv.set(request("nope")).await.unwrap().into_inner();
        assert!(!refused.applied, "return_previous={return_previous}");
        assert!(!refused.previous_found);
        assert!(
            !get(&mut kv, &key).await.found,
            "IF_PRESENT created the key"
        );

        set(&mut kv, &key, "old").await;
        let applied = kv.set(request("new")).await.unwrap().into_inner();
        assert!(applied.applied, "return_previous={return_previous}");
        assert_eq!(applied.previous_found, return_previous);
        if return_previous {
            assert_eq!(applied.previous, "old");
        }
        assert_eq!(get(&mut kv, &key).await.value, "new");
    }
}

#[tokio::test]
async fn set_keep_ttl_keeps_ttl_while_plain_set_clears_it() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("keepttl");
    set_with_ttl(&mut kv, &key, "v1", secs(3600)).await;
    assert_expiring(&mut kv, &key, 3_590_000, 3_600_000).await;

    let kept = kv
        .set(pb::SetRequest {
            key: key.clone(),
            value: bytes("v2"),
            keep_ttl: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(kept.applied);
    assert_eq!(get(&mut kv, &key).await.value, "v2");
    assert_expiring(&mut kv, &key, 3_590_000, 3_600_000).await;

    set(&mut kv, &key, "v3").await;
    assert_eq!(get(&mut kv, &key).await.value, "v3");
    assert_persistent(&mut kv, &key).await;
}

#[tokio::test]
async fn set_with_ttl_replaces_old_ttl() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("set-ttl");
    set_with_ttl(&mut kv, &key, "a", secs(3600)).await;
    set_with_ttl(&mut kv, &key, "b", secs(60)).await;
    assert_expiring(&mut kv, &key, 50_000, 60_000).await;
}

#[tokio::test]
async fn get_include_ttl_reports_missing_persistent_and_expiring() {
    let (_gateway, mut kv) = start().await;
    let request = |key: &str| pb::GetRequest {
        key: key.to_owned(),
        include_ttl: true,
        ..Default::default()
    };

    let missing = kv
        .get(request(&unique_key("ttl-missing")))
        .await
        .unwrap()
        .into_inner();
    assert!(!missing.found);
    let status = missing.ttl.expect("ttl is set when include_ttl");
    assert_eq!(status.state(), State::Missing);
    assert!(status.ttl.is_none());

    let persistent_key = unique_key("ttl-persistent");
    set(&mut kv, &persistent_key, "p").await;
    let persistent = kv.get(request(&persistent_key)).await.unwrap().into_inner();
    assert!(persistent.found);
    assert_eq!(persistent.value, "p");
    let status = persistent.ttl.unwrap();
    assert_eq!(status.state(), State::Persistent);
    assert!(status.ttl.is_none());

    let expiring_key = unique_key("ttl-expiring");
    set_with_ttl(&mut kv, &expiring_key, "e", secs(10)).await;
    let expiring = kv.get(request(&expiring_key)).await.unwrap().into_inner();
    assert!(expiring.found);
    assert_eq!(expiring.value, "e");
    let status = expiring.ttl.unwrap();
    assert_eq!(status.state(), State::Expiring);
    let ttl = as_millis(status.ttl.as_ref().unwrap());
    assert!(ttl > 9_000 && ttl <= 10_000, "ttl {ttl}");
}

#[tokio::test]
async fn get_without_include_ttl_sends_no_ttl() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("no-ttl-field");
    set_with_ttl(&mut kv, &key, "v", secs(10)).await;
    let got = get(&mut kv, &key).await;
    assert!(got.found);
    assert!(got.ttl.is_none());
}

#[tokio::test]
async fn get_refresh_ttl_resets_the_ttl() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("refresh");
    set_with_ttl(&mut kv, &key, "v", secs(10)).await;
    let got = kv
        .get(pb::GetRequest {
            key: key.clone(),
            include_ttl: true,
            refresh_ttl: secs(3600),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, "v");
    let status = got.ttl.unwrap();
    assert_eq!(status.state(), State::Expiring);
    let ttl = as_millis(status.ttl.as_ref().unwrap());
    assert!(ttl > 3_590_000 && ttl <= 3_600_000, "ttl {ttl}");
    assert_expiring(&mut kv, &key, 3_590_000, 3_600_000).await;

    // A persistent key gets the TTL too.
    let persistent = unique_key("refresh-persistent");
    set(&mut kv, &persistent, "v").await;
    let got = kv
        .get(pb::GetRequest {
            key: persistent.clone(),
            include_ttl: false,
            refresh_ttl: secs(60),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert!(got.ttl.is_none());
    assert_expiring(&mut kv, &persistent, 50_000, 60_000).await;
}

#[tokio::test]
async fn get_refresh_ttl_keeps_a_key_alive_while_it_is_read() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("sliding");
    set_with_ttl(&mut kv, &key, "v", millis(400)).await;
    let started = Instant::now();
    // Read every 150 ms for well past the original TTL.
    while started.elapsed() < Duration::from_millis(900) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let got = kv
            .get(pb::GetRequest {
                key: key.clone(),
                include_ttl: false,
                refresh_ttl: millis(400),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            got.found,
            "expired after {:?} despite refreshes",
            started.elapsed()
        );
    }
    // Once the reads stop, it expires.
    wait_until_gone(&mut kv, &key, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn get_refresh_ttl_does_not_create_a_missing_key() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("refresh-missing");
    let got = kv
        .get(pb::GetRequest {
            key: key.clone(),
            include_ttl: true,
            refresh_ttl: secs(60),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.found);
    assert_eq!(got.ttl.unwrap().state(), State::Missing);
    assert_eq!(direct().await.exists::<i64, _>(&key).await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// TTLs really expire

#[tokio::test]
async fn set_ttl_really_expires() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("expires");
    set_with_ttl(&mut kv, &key, "short-lived", millis(400)).await;
    assert!(get(&mut kv, &key).await.found);
    wait_until_gone(&mut kv, &key, Duration::from_secs(3)).await;
    assert_eq!(ttl_of(&mut kv, &key).await, (State::Missing, None));
}

#[tokio::test]
async fn sub_millisecond_ttl_rounds_up_instead_of_being_rejected() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("round-up");
    let one_nanosecond = Some(prost_types::Duration {
        seconds: 0,
        nanos: 1,
    });
    set_with_ttl(&mut kv, &key, "v", one_nanosecond).await;
    // It became a 1 ms TTL, not "no TTL": the key goes away.
    wait_until_gone(&mut kv, &key, Duration::from_secs(2)).await;

    let key = unique_key("round-up-expire");
    set(&mut kv, &key, "v").await;
    let reply = kv
        .expire(pb::ExpireRequest {
            key: key.clone(),
            ttl: Some(prost_types::Duration {
                seconds: 100,
                nanos: 1,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
    assert_expiring(&mut kv, &key, 99_000, 100_001).await;
}

#[tokio::test]
async fn expire_really_expires() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("expire-expires");
    set(&mut kv, &key, "v").await;
    let reply = kv
        .expire(pb::ExpireRequest {
            key: key.clone(),
            ttl: millis(300),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
    assert!(get(&mut kv, &key).await.found);
    wait_until_gone(&mut kv, &key, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn set_many_ttl_really_expires() {
    let (_gateway, mut kv) = start().await;
    let keys = [unique_key("many-exp"), unique_key("many-exp")];
    let reply = kv
        .set_many(pb::SetManyRequest {
            entries: keys
                .iter()
                .map(|key| pb::KeyValueEntry {
                    key: key.clone(),
                    value: bytes("v"),
                })
                .collect(),
            ttl: millis(400),
            if_none_exist: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
    for key in &keys {
        assert!(get(&mut kv, key).await.found);
    }
    for key in &keys {
        wait_until_gone(&mut kv, key, Duration::from_secs(3)).await;
    }
}

#[tokio::test]
async fn compare_and_swap_ttl_really_expires() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("cas-exp");
    let reply = kv
        .compare_and_swap(pb::CompareAndSwapRequest {
            key: key.clone(),
            expectation: Some(Expectation::ExpectAbsent(true)),
            value: bytes("v"),
            ttl: millis(400),
            keep_ttl: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.swapped);
    assert!(get(&mut kv, &key).await.found);
    wait_until_gone(&mut kv, &key, Duration::from_secs(3)).await;
}

// ---------------------------------------------------------------------------------------------
// The old helper's scenarios

#[tokio::test]
async fn task_result_is_cached_as_json_for_an_hour() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("task-result");
    let json: &[u8] = br#"{"task_id":"7f9c2b","status":"succeeded","result":{"rows":42,"files":["a.csv","b.csv"],"ratio":0.25,"note":"caf\u00e9 \"quoted\""},"finished_at":"2024-05-01T12:00:00Z"}"#;
    let reply = kv
        .set(pb::SetRequest {
            key: key.clone(),
            value: Bytes::from_static(json),
            ttl: secs(3600),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);

    let got = kv
        .get(pb::GetRequest {
            key: key.clone(),
            include_ttl: true,
            refresh_ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    // Byte-identical, so it parses back as the very same JSON document.
    assert_eq!(got.value.as_ref(), json);
    let status = got.ttl.unwrap();
    assert_eq!(status.state(), State::Expiring);
    let ttl = as_millis(status.ttl.as_ref().unwrap());
    assert!(ttl > 3_590_000 && ttl <= 3_600_000, "ttl {ttl}");
}

#[tokio::test]
async fn several_keys_are_checked_expired_and_deleted_at_once() {
    let (_gateway, mut kv) = start().await;
    let keys: Vec<String> = (0..3).map(|_| unique_key("several")).collect();
    let missing = unique_key("several-missing");
    let reply = kv
        .set_many(pb::SetManyRequest {
            entries: keys
                .iter()
                .map(|key| pb::KeyValueEntry {
                    key: key.clone(),
                    value: bytes("v"),
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);

    let mut all = keys.clone();
    all.push(missing.clone());
    let exists = kv
        .exists(pb::ExistsRequest { keys: all.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exists.count, 3);

    // Expire them all in one atomic step.
    let expired = kv
        .transaction(pb::TransactionRequest {
            guards: vec![],
            ops: all
                .iter()
                .map(|key| pb::TransactionOperation {
                    op: Some(pb::transaction_operation::Op::Expire(
                        pb::transaction_operation::Expire {
                            key: key.clone(),
                            ttl: secs(600),
                        },
                    )),
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(expired.committed);
    let results: Vec<i64> = expired.results.iter().map(|r| r.value).collect();
    assert_eq!(results, vec![1, 1, 1, 0]);
    for key in &keys {
        assert_expiring(&mut kv, key, 590_000, 600_000).await;
    }
    assert_eq!(ttl_of(&mut kv, &missing).await, (State::Missing, None));

    let deleted = kv
        .delete(pb::DeleteRequest { keys: all.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 3);
    let exists = kv
        .exists(pb::ExistsRequest { keys: all })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exists.count, 0);
}

// ---------------------------------------------------------------------------------------------
// GetMany / SetMany / Delete / Exists

#[tokio::test]
async fn get_many_preserves_order_and_reports_missing_keys() {
    let (_gateway, mut kv) = start().await;
    let a = unique_key("gm-a");
    let b = unique_key("gm-b");
    let missing = unique_key("gm-missing");
    let hash = unique_key("gm-hash");
    set(&mut kv, &a, "A").await;
    set(&mut kv, &b, "").await;
    direct()
        .await
        .hset::<i64, _, _>(&hash, ("f", "v"))
        .await
        .unwrap();

    let keys = vec![b.clone(), missing, a.clone(), hash, a];
    let reply = kv
        .get_many(pb::GetManyRequest { keys })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(bool, Bytes)> = reply
        .values
        .into_iter()
        .map(|value| (value.found, value.value))
        .collect();
    assert_eq!(
        got,
        vec![
            (true, Bytes::new()),
            (false, Bytes::new()),
            (true, bytes("A")),
            // A hash reads as not found.
            (false, Bytes::new()),
            (true, bytes("A")),
        ]
    );
}

#[tokio::test]
async fn set_many_writes_every_entry() {
    let (_gateway, mut kv) = start().await;
    let a = unique_key("sm-a");
    let b = unique_key("sm-b");
    set_with_ttl(&mut kv, &b, "old", secs(3600)).await;
    let reply = kv
        .set_many(pb::SetManyRequest {
            entries: vec![
                pb::KeyValueEntry {
                    key: a.clone(),
                    value: bytes("1"),
                },
                pb::KeyValueEntry {
                    key: b.clone(),
                    value: bytes("2"),
                },
                // A key named twice takes its last value.
                pb::KeyValueEntry {
                    key: a.clone(),
                    value: bytes("3"),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
    assert_eq!(get(&mut kv, &a).await.value, "3");
    assert_eq!(get(&mut kv, &b).await.value, "2");
    // Without ttl the keys do not expire.
    assert_persistent(&mut kv, &a).await;
    assert_persistent(&mut kv, &b).await;
}

#[tokio::test]
async fn set_many_ttl_applies_to_every_key() {
    let (_gateway, mut kv) = start().await;
    let keys = [unique_key("sm-ttl"), unique_key("sm-ttl")];
    let reply = kv
        .set_many(pb::SetManyRequest {
            entries: keys
                .iter()
                .map(|key| pb::KeyValueEntry {
                    key: key.clone(),
                    value: bytes("v"),
                })
                .collect(),
            ttl: secs(60),
            if_none_exist: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
    for key in &keys {
        assert_expiring(&mut kv, key, 50_000, 60_000).await;
    }
}

#[tokio::test]
async fn set_many_if_none_exist_writes_nothing_when_one_key_exists() {
    let (_gateway, mut kv) = start().await;
    let fresh = unique_key("nx-fresh");
    let existing = unique_key("nx-existing");
    set(&mut kv, &existing, "keep").await;
    let reply = kv
        .set_many(pb::SetManyRequest {
            entries: vec![
                pb::KeyValueEntry {
                    key: fresh.clone(),
                    value: bytes("new"),
                },
                pb::KeyValueEntry {
                    key: existing.clone(),
                    value: bytes("new"),
                },
            ],
            ttl: secs(60),
            if_none_exist: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.applied);
    assert!(!get(&mut kv, &fresh).await.found);
    assert_eq!(get(&mut kv, &existing).await.value, "keep");
    assert_persistent(&mut kv, &existing).await;
}

#[tokio::test]
async fn set_many_if_none_exist_writes_all_when_none_exists() {
    let (_gateway, mut kv) = start().await;
    let keys = [unique_key("nx-all"), unique_key("nx-all")];
    let reply = kv
        .set_many(pb::SetManyRequest {
            entries: keys
                .iter()
                .map(|key| pb::KeyValueEntry {
                    key: key.clone(),
                    value: bytes(key),
                })
                .collect(),
            ttl: None,
            if_none_exist: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
    for key in &keys {
        assert_eq!(get(&mut kv, key).await.value, key.as_str());
    }
}

#[tokio::test]
async fn delete_counts_the_keys_that_existed() {
    let (_gateway, mut kv) = start().await;
    let a = unique_key("del-a");
    let b = unique_key("del-b");
    let hash = unique_key("del-hash");
    set(&mut kv, &a, "1").await;
    set(&mut kv, &b, "2").await;
    direct()
        .await
        .hset::<i64, _, _>(&hash, ("f", "v"))
        .await
        .unwrap();
    let reply = kv
        .delete(pb::DeleteRequest {
            keys: vec![
                a.clone(),
                unique_key("del-missing"),
                b.clone(),
                hash.clone(),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.deleted, 3);
    assert!(!get(&mut kv, &a).await.found);
    assert!(!get(&mut kv, &b).await.found);
    assert_eq!(direct().await.exists::<i64, _>(&hash).await.unwrap(), 0);

    let again = kv
        .delete(pb::DeleteRequest { keys: vec![a] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.deleted, 0);
}

#[tokio::test]
async fn exists_counts_duplicates_twice() {
    let (_gateway, mut kv) = start().await;
    let a = unique_key("ex-a");
    let hash = unique_key("ex-hash");
    set(&mut kv, &a, "1").await;
    direct()
        .await
        .hset::<i64, _, _>(&hash, ("f", "v"))
        .await
        .unwrap();
    let count = |keys: Vec<String>| {
        let mut kv = kv.clone();
        async move {
            kv.exists(pb::ExistsRequest { keys })
                .await
                .unwrap()
                .into_inner()
                .count
        }
    };
    assert_eq!(count(vec![a.clone()]).await, 1);
    assert_eq!(count(vec![a.clone(), a.clone()]).await, 2);
    assert_eq!(
        count(vec![a.clone(), unique_key("ex-missing"), a.clone(), hash]).await,
        3
    );
    assert_eq!(count(vec![unique_key("ex-missing")]).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Expire / Persist / GetTtl

async fn expire(
    kv: &mut Kv,
    key: &str,
    ttl_secs: u64,
    condition: pb::expire_request::Condition,
) -> bool {
    kv.expire(pb::ExpireRequest {
        key: key.to_owned(),
        ttl: secs(ttl_secs),
        condition: condition.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .applied
}

#[tokio::test]
async fn expire_always_sets_the_ttl_of_an_existing_key() {
    use pb::expire_request::Condition;
    let (_gateway, mut kv) = start().await;
    let key = unique_key("exp-always");
    set(&mut kv, &key, "v").await;
    assert!(expire(&mut kv, &key, 100, Condition::Always).await);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;
    // ALWAYS also shortens or lengthens an existing TTL.
    assert!(expire(&mut kv, &key, 500, Condition::Always).await);
    assert_expiring(&mut kv, &key, 490_000, 500_000).await;
    assert!(expire(&mut kv, &key, 50, Condition::Always).await);
    assert_expiring(&mut kv, &key, 40_000, 50_000).await;
}

#[tokio::test]
async fn expire_on_missing_key_is_not_applied_for_any_condition() {
    use pb::expire_request::Condition;
    let (_gateway, mut kv) = start().await;
    let key = unique_key("exp-missing");
    for condition in [
        Condition::Always,
        Condition::IfNoTtl,
        Condition::IfHasTtl,
        Condition::IfGreater,
        Condition::IfLess,
    ] {
        assert!(
            !expire(&mut kv, &key, 100, condition).await,
            "{condition:?}"
        );
    }
    assert_eq!(ttl_of(&mut kv, &key).await, (State::Missing, None));
}

#[tokio::test]
async fn expire_if_no_ttl_only_applies_to_persistent_keys() {
    use pb::expire_request::Condition;
    let (_gateway, mut kv) = start().await;
    let persistent = unique_key("exp-nx-p");
    set(&mut kv, &persistent, "v").await;
    assert!(expire(&mut kv, &persistent, 100, Condition::IfNoTtl).await);
    assert_expiring(&mut kv, &persistent, 90_000, 100_000).await;

    let expiring = unique_key("exp-nx-e");
    set_with_ttl(&mut kv, &expiring, "v", secs(100)).await;
    assert!(!expire(&mut kv, &expiring, 500, Condition::IfNoTtl).await);
    assert_expiring(&mut kv, &expiring, 90_000, 100_000).await;
}

#[tokio::test]
async fn expire_if_has_ttl_only_applies_to_expiring_keys() {
    use pb::expire_request::Condition;
    let (_gateway, mut kv) = start().await;
    let persistent = unique_key("exp-xx-p");
    set(&mut kv, &persistent, "v").await;
    assert!(!expire(&mut kv, &persistent, 100, Condition::IfHasTtl).await);
    assert_persistent(&mut kv, &persistent).await;

    let expiring = unique_key("exp-xx-e");
    set_with_ttl(&mut kv, &expiring, "v", secs(100)).await;
    assert!(expire(&mut kv, &expiring, 500, Condition::IfHasTtl).await);
    assert_expiring(&mut kv, &expiring, 490_000, 500_000).await;
}

#[tokio::test]
async fn expire_if_greater_only_lengthens_and_never_applies_to_persistent_keys() {
    use pb::expire_request::Condition;
    let (_gateway, mut kv) = start().await;
    let key = unique_key("exp-gt");
    set_with_ttl(&mut kv, &key, "v", secs(100)).await;
    assert!(!expire(&mut kv, &key, 50, Condition::IfGreater).await);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;
    assert!(expire(&mut kv, &key, 200, Condition::IfGreater).await);
    assert_expiring(&mut kv, &key, 190_000, 200_000).await;

    let persistent = unique_key("exp-gt-p");
    set(&mut kv, &persistent, "v").await;
    assert!(!expire(&mut kv, &persistent, 100, Condition::IfGreater).await);
    assert_persistent(&mut kv, &persistent).await;
}

#[tokio::test]
async fn expire_if_less_only_shortens_and_always_applies_to_persistent_keys() {
    use pb::expire_request::Condition;
    let (_gateway, mut kv) = start().await;
    let key = unique_key("exp-lt");
    set_with_ttl(&mut kv, &key, "v", secs(100)).await;
    assert!(!expire(&mut kv, &key, 200, Condition::IfLess).await);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;
    assert!(expire(&mut kv, &key, 50, Condition::IfLess).await);
    assert_expiring(&mut kv, &key, 40_000, 50_000).await;

    let persistent = unique_key("exp-lt-p");
    set(&mut kv, &persistent, "v").await;
    assert!(expire(&mut kv, &persistent, 100, Condition::IfLess).await);
    assert_expiring(&mut kv, &persistent, 90_000, 100_000).await;
}

#[tokio::test]
async fn persist_removes_the_ttl() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("persist");
    set_with_ttl(&mut kv, &key, "v", secs(100)).await;
    let client = kv.clone();
    let persist = |key: String| {
        let mut kv = client.clone();
        async move {
            kv.persist(pb::PersistRequest { key })
                .await
                .unwrap()
                .into_inner()
                .applied
        }
    };
    assert!(persist(key.clone()).await);
    assert_persistent(&mut kv, &key).await;
    assert_eq!(get(&mut kv, &key).await.value, "v");
    // No TTL left to remove, and a missing key has none.
    assert!(!persist(key.clone()).await);
    assert!(!persist(unique_key("persist-missing")).await);
}

#[tokio::test]
async fn get_ttl_reports_missing_persistent_and_expiring() {
    let (_gateway, mut kv) = start().await;
    assert_eq!(
        ttl_of(&mut kv, &unique_key("gt-missing")).await,
        (State::Missing, None)
    );
    let persistent = unique_key("gt-persistent");
    set(&mut kv, &persistent, "v").await;
    assert_persistent(&mut kv, &persistent).await;
    let expiring = unique_key("gt-expiring");
    set_with_ttl(&mut kv, &expiring, "v", millis(12_345)).await;
    assert_expiring(&mut kv, &expiring, 11_000, 12_345).await;
    // Non-string keys have TTLs too.
    let hash = unique_key("gt-hash");
    let client = direct().await;
    client.hset::<i64, _, _>(&hash, ("f", "v")).await.unwrap();
    assert_persistent(&mut kv, &hash).await;
}

// ---------------------------------------------------------------------------------------------
// Increment / IncrementFloat

async fn increment(kv: &mut Kv, key: &str, delta: i64, ttl: Option<prost_types::Duration>) -> i64 {
    kv.increment(pb::IncrementRequest {
        key: key.to_owned(),
        delta,
        ttl,
    })
    .await
    .unwrap()
    .into_inner()
    .value
}

#[tokio::test]
async fn increment_adds_to_a_counter_starting_at_zero() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("incr");
    assert_eq!(increment(&mut kv, &key, 5, None).await, 5);
    assert_eq!(increment(&mut kv, &key, -8, None).await, -3);
    assert_eq!(increment(&mut kv, &key, 0, None).await, -3);
    assert_eq!(get(&mut kv, &key).await.value, "-3");
    assert_persistent(&mut kv, &key).await;

    // An existing integer string counts from its value.
    let existing = unique_key("incr-existing");
    set(&mut kv, &existing, "40").await;
    assert_eq!(increment(&mut kv, &existing, 2, None).await, 42);
    assert_eq!(increment(&mut kv, &existing, 2, secs(60)).await, 44);
}

#[tokio::test]
async fn increment_reaches_the_64_bit_limits_exactly() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("incr-max");
    set(&mut kv, &key, &(i64::MAX - 1).to_string()).await;
    assert_eq!(increment(&mut kv, &key, 1, None).await, i64::MAX);
    let key = unique_key("incr-big-ttl");
    set(&mut kv, &key, &(1i64 << 60).to_string()).await;
    assert_eq!(
        increment(&mut kv, &key, 1, secs(60)).await,
        (1i64 << 60) + 1
    );
}

#[tokio::test]
async fn increment_with_ttl_sets_ttl_only_when_the_counter_has_none() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("window");
    assert_eq!(increment(&mut kv, &key, 1, secs(10)).await, 1);
    assert_expiring(&mut kv, &key, 9_000, 10_000).await;
    // A second hit in the same window keeps the window's end.
    assert_eq!(increment(&mut kv, &key, 1, secs(3600)).await, 2);
    assert_expiring(&mut kv, &key, 9_000, 10_000).await;

    // A counter without TTL gets one.
    let persistent = unique_key("window-p");
    assert_eq!(increment(&mut kv, &persistent, 1, None).await, 1);
    assert_persistent(&mut kv, &persistent).await;
    assert_eq!(increment(&mut kv, &persistent, 1, secs(10)).await, 2);
    assert_expiring(&mut kv, &persistent, 9_000, 10_000).await;

    // A plain Increment leaves an existing TTL alone.
    assert_eq!(increment(&mut kv, &persistent, 1, None).await, 3);
    assert_expiring(&mut kv, &persistent, 9_000, 10_000).await;
}

#[tokio::test]
async fn increment_window_restarts_after_it_expires() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("window-exp");
    assert_eq!(increment(&mut kv, &key, 1, millis(300)).await, 1);
    assert_eq!(increment(&mut kv, &key, 1, millis(300)).await, 2);
    wait_until_gone(&mut kv, &key, Duration::from_secs(3)).await;
    assert_eq!(increment(&mut kv, &key, 1, millis(300)).await, 1);
}

#[tokio::test]
async fn increment_float_adds_to_a_value_starting_at_zero() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("incrf");
    let add = |delta: f64| {
        let mut kv = kv.clone();
        let key = key.clone();
        async move {
            kv.increment_float(pb::IncrementFloatRequest { key, delta })
                .await
                .unwrap()
                .into_inner()
                .value
        }
    };
    assert_eq!(add(1.5).await, 1.5);
    assert_eq!(add(2.25).await, 3.75);
    assert_eq!(add(-4.0).await, -0.25);
    assert_eq!(get(&mut kv, &key).await.value, "-0.25");

    let integer = unique_key("incrf-int");
    set(&mut kv, &integer, "10").await;
    let value = kv
        .increment_float(pb::IncrementFloatRequest {
            key: integer,
            delta: 0.5,
        })
        .await
        .unwrap()
        .into_inner()
        .value;
    assert_eq!(value, 10.5);
}

// ---------------------------------------------------------------------------------------------
// CompareAndSwap

async fn cas(
    kv: &mut Kv,
    key: &str,
    expectation: Expectation,
    value: &str,
) -> pb::CompareAndSwapResponse {
    kv.compare_and_swap(pb::CompareAndSwapRequest {
        key: key.to_owned(),
        expectation: Some(expectation),
        value: bytes(value),
        ttl: None,
        keep_ttl: false,
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn compare_and_swap_swaps_when_the_expected_value_matches() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("cas");
    set(&mut kv, &key, "v1").await;
    let reply = cas(&mut kv, &key, Expectation::Expected(bytes("v1")), "v2").await;
    assert!(reply.swapped);
    assert!(!reply.current_found);
    assert!(reply.current.is_empty());
    assert_eq!(get(&mut kv, &key).await.value, "v2");
}

#[tokio::test]
async fn compare_and_swap_returns_current_value_on_mismatch() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("cas-mismatch");
    set(&mut kv, &key, "actual").await;
    let reply = cas(&mut kv, &key, Expectation::Expected(bytes("stale")), "new").await;
    assert!(!reply.swapped);
    assert!(reply.current_found);
    assert_eq!(reply.current, "actual");
    assert_eq!(get(&mut kv, &key).await.value, "actual");

    // Expecting a value of a missing key: no swap, no current.
    let missing = unique_key("cas-missing");
    let reply = cas(&mut kv, &missing, Expectation::Expected(bytes("x")), "new").await;
    assert!(!reply.swapped);
    assert!(!reply.current_found);
    assert!(!get(&mut kv, &missing).await.found);

    // An empty expectation matches a stored empty value, not a missing key.
    let reply = cas(
        &mut kv,
        &missing,
        Expectation::Expected(Bytes::new()),
        "new",
    )
    .await;
    assert!(!reply.swapped);
    assert!(!get(&mut kv, &missing).await.found);
    let empty = unique_key("cas-empty");
    set(&mut kv, &empty, "").await;
    let reply = cas(
        &mut kv,
        &empty,
        Expectation::Expected(Bytes::new()),
        "filled",
    )
    .await;
    assert!(reply.swapped);
    assert_eq!(get(&mut kv, &empty).await.value, "filled");
}

#[tokio::test]
async fn compare_and_swap_expect_absent_only_creates() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("cas-absent");
    let reply = cas(&mut kv, &key, Expectation::ExpectAbsent(true), "first").await;
    assert!(reply.swapped);
    assert_eq!(get(&mut kv, &key).await.value, "first");
    let reply = cas(&mut kv, &key, Expectation::ExpectAbsent(true), "second").await;
    assert!(!reply.swapped);
    assert!(reply.current_found);
    assert_eq!(reply.current, "first");
    assert_eq!(get(&mut kv, &key).await.value, "first");
}

#[tokio::test]
async fn compare_and_swap_ttl_keep_ttl_and_default_clear() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("cas-ttl");
    set(&mut kv, &key, "v1").await;
    let request = |expected: &str, value: &str, ttl, keep_ttl| pb::CompareAndSwapRequest {
        key: key.clone(),
        expectation: Some(Expectation::Expected(bytes(expected))),
        value: bytes(value),
        ttl,
        keep_ttl,
    };

    let reply = kv
        .compare_and_swap(request("v1", "v2", secs(100), false))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.swapped);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;

    let reply = kv
        .compare_and_swap(request("v2", "v3", None, true))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.swapped);
    assert_eq!(get(&mut kv, &key).await.value, "v3");
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;

    let reply = kv
        .compare_and_swap(request("v3", "v4", None, false))
        .await
        .unwrap()
        .into_inner();
    assert!(reply.swapped);
    assert_eq!(get(&mut kv, &key).await.value, "v4");
    assert_persistent(&mut kv, &key).await;

    // A failed swap leaves the TTL alone.
    set_with_ttl(&mut kv, &key, "v5", secs(100)).await;
    let reply = kv
        .compare_and_swap(request("nope", "v6", secs(3600), false))
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.swapped);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_swap_lets_exactly_one_concurrent_writer_win_each_round() {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 12;
    let (gateway, mut kv) = start().await;
    let mut clients = Vec::with_capacity(WRITERS);
    for _ in 0..WRITERS {
        clients.push(gateway.kv().await);
    }
    let redis = direct().await;
    let key = unique_key("cas-race");
    let mut current = "initial".to_owned();
    set(&mut kv, &key, &current).await;

    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(writer, mut client)| {
                let (key, expected, barrier) = (key.clone(), current.clone(), barrier.clone());
                let mine = format!("round{round}-writer{writer}");
                tokio::spawn(async move {
                    barrier.wait().await;
                    let reply = client
                        .compare_and_swap(pb::CompareAndSwapRequest {
                            key,
                            expectation: Some(Expectation::Expected(bytes(&expected))),
                            value: bytes(&mine),
                            ttl: None,
                            keep_ttl: false,
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    (mine, reply)
                })
            })
            .collect();
        let outcomes: Vec<(String, pb::CompareAndSwapResponse)> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|outcome| outcome.unwrap())
            .collect();
        let winners: Vec<&String> = outcomes
            .iter()
            .filter(|(_, reply)| reply.swapped)
            .map(|(mine, _)| mine)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = winners[0].clone();
        for (mine, reply) in outcomes.iter().filter(|(_, reply)| !reply.swapped) {
            assert!(reply.current_found, "{mine}");
            assert_eq!(reply.current, winner.as_str(), "{mine} saw another value");
        }
        let stored = redis.get::<Option<String>, _>(&key).await.unwrap();
        assert_eq!(stored.as_deref(), Some(winner.as_str()), "round {round}");
        current = winner;
    }
}

// ---------------------------------------------------------------------------------------------
// Scan

/// Every page of a Scan, failing on an error status.
async fn scan_pages(
    kv: &mut Kv,
    pattern: &str,
    page_size: u32,
    key_type: &str,
) -> Vec<Vec<String>> {
    let mut stream = kv
        .scan(pb::ScanRequest {
            pattern: pattern.to_owned(),
            page_size,
            r#type: key_type.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        pages.push(page.keys);
    }
    pages
}

async fn scan_set(kv: &mut Kv, pattern: &str, key_type: &str) -> HashSet<String> {
    scan_pages(kv, pattern, 0, key_type)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test]
async fn scan_streams_pages_no_larger_than_page_size_and_finds_every_key() {
    let (_gateway, mut kv) = start().await;
    let prefix = unique_key("scan-pages");
    let expected: HashSet<String> = (0..25).map(|i| format!("{prefix}:{i}")).collect();
    for key in &expected {
        set(&mut kv, key, "v").await;
    }
    let pattern = format!("{prefix}:*");
    for page_size in [1, 4, 7, 25, 100] {
        let pages = scan_pages(&mut kv, &pattern, page_size, "").await;
        for page in &pages {
            assert!(
                page.len() <= page_size as usize,
                "a page of {} keys with page_size {page_size}",
                page.len()
            );
        }
        let total: usize = pages.iter().map(Vec::len).sum();
        assert!(
            total >= expected.len(),
            "page_size {page_size}: only {total} keys"
        );
        let found: HashSet<String> = pages.into_iter().flatten().collect();
        assert_eq!(found, expected, "page_size {page_size}");
    }
    // page_size 0 means 100.
    let pages = scan_pages(&mut kv, &pattern, 0, "").await;
    assert!(pages.iter().all(|page| page.len() <= 100));
    let found: HashSet<String> = pages.into_iter().flatten().collect();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn scan_pattern_confines_results() {
    let (_gateway, mut kv) = start().await;
    let prefix = unique_key("scan-pattern");
    let a: HashSet<String> = (0..5).map(|i| format!("{prefix}:a:{i}")).collect();
    let b: HashSet<String> = (0..3).map(|i| format!("{prefix}:b:{i}")).collect();
    let star = format!("{prefix}:lit*x");
    let not_star = format!("{prefix}:litYx");
    for key in a.iter().chain(&b).chain([&star, &not_star]) {
        set(&mut kv, key, "v").await;
    }
    assert_eq!(scan_set(&mut kv, &format!("{prefix}:a:*"), "").await, a);
    assert_eq!(scan_set(&mut kv, &format!("{prefix}:b:*"), "").await, b);
    assert_eq!(
        scan_set(&mut kv, &format!("{prefix}:?:1"), "").await,
        HashSet::from([format!("{prefix}:a:1"), format!("{prefix}:b:1")])
    );
    assert_eq!(
        scan_set(&mut kv, &format!("{prefix}:[b]:[0-1]"), "").await,
        HashSet::from([format!("{prefix}:b:0"), format!("{prefix}:b:1")])
    );
    // `\` escapes a glob character.
    assert_eq!(
        scan_set(&mut kv, &format!("{prefix}:lit\\*x"), "").await,
        HashSet::from([star.clone()])
    );
    assert_eq!(
        scan_set(&mut kv, &format!("{prefix}:lit*x"), "").await,
        HashSet::from([star, not_star])
    );
    assert!(
        scan_set(&mut kv, &format!("{prefix}:c:*"), "")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn scan_type_filter_returns_only_keys_of_that_type() {
    let (_gateway, mut kv) = start().await;
    let prefix = unique_key("scan-type");
    let string = format!("{prefix}:string");
    let hash = format!("{prefix}:hash");
    let list = format!("{prefix}:list");
    set(&mut kv, &string, "v").await;
    let client = direct().await;
    client.hset::<i64, _, _>(&hash, ("f", "v")).await.unwrap();
    rpush(&client, &list, "x").await;
    let pattern = format!("{prefix}:*");

    assert_eq!(
        scan_set(&mut kv, &pattern, "string").await,
        HashSet::from([string.clone()])
    );
    assert_eq!(
        scan_set(&mut kv, &pattern, "hash").await,
        HashSet::from([hash.clone()])
    );
    assert_eq!(
        scan_set(&mut kv, &pattern, "list").await,
        HashSet::from([list.clone()])
    );
    assert!(scan_set(&mut kv, &pattern, "zset").await.is_empty());
    // An empty pattern means every key.
    let every_hash = scan_set(&mut kv, "", "hash").await;
    assert!(
        every_hash.contains(&hash),
        "{hash} missing from an empty-pattern scan"
    );
    assert!(!every_hash.contains(&string));
    assert_eq!(
        scan_set(&mut kv, &pattern, "").await,
        HashSet::from([string, hash, list])
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input: INVALID_ARGUMENT naming the field, and the gateway keeps serving

#[tokio::test]
async fn empty_and_oversized_keys_are_invalid_arguments_naming_the_field() {
    let (_gateway, mut kv) = start_small().await;
    let long = "k".repeat(17);
    let fits = "k".repeat(16);
    for key in ["", long.as_str()] {
        assert_invalid(kv.get(get_request(key)).await, "key");
        assert_invalid(kv.set(set_request(key, "v")).await, "key");
        assert_invalid(kv.expire(expire_request(key, secs(1))).await, "key");
        let persist = pb::PersistRequest { key: key.into() };
        assert_invalid(kv.persist(persist).await, "key");
        let get_ttl = pb::GetTtlRequest { key: key.into() };
        assert_invalid(kv.get_ttl(get_ttl).await, "key");
        assert_invalid(kv.increment(increment_request(key, 1, None)).await, "key");
        let float = pb::IncrementFloatRequest {
            key: key.into(),
            delta: 1.0,
        };
        assert_invalid(kv.increment_float(float).await, "key");
        let cas = cas_request(key, Expectation::ExpectAbsent(true), "v");
        assert_invalid(kv.compare_and_swap(cas).await, "key");
        // In a batch, the message names the item.
        let keys = vec!["a".to_owned(), "b".to_owned(), key.to_owned()];
        let get_many = pb::GetManyRequest { keys: keys.clone() };
        assert_invalid(kv.get_many(get_many).await, "keys[2]");
        let delete = pb::DeleteRequest { keys: keys.clone() };
        assert_invalid(kv.delete(delete).await, "keys[2]");
        assert_invalid(kv.exists(pb::ExistsRequest { keys }).await, "keys[2]");
        let set_many = set_many_request(vec![entry("a", "v"), entry(key, "v")], None, false);
        assert_invalid(kv.set_many(set_many).await, "entries[1].key");
    }
    // Exactly --max-key-bytes is fine.
    assert!(
        kv.set(set_request(&fits, "v"))
            .await
            .unwrap()
            .into_inner()
            .applied
    );
    assert_eq!(get(&mut kv, &fits).await.value, "v");
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn oversized_values_are_invalid_arguments_naming_the_field() {
    let (_gateway, mut kv) = start_small().await;
    let big = vec![b'x'; 33];
    let fits = vec![b'x'; 32];
    let key = unique_key("big");

    assert_invalid(kv.set(set_request(&key, &big)).await, "value");
    assert!(!get(&mut kv, &key).await.found);
    // Exactly --max-value-bytes is fine.
    assert!(
        kv.set(set_request(&key, &fits))
            .await
            .unwrap()
            .into_inner()
            .applied
    );
    let set_many = set_many_request(vec![entry(&key, "small"), entry(&key, &big)], None, false);
    assert_invalid(kv.set_many(set_many).await, "entries[1].value");
    let cas = cas_request(&key, Expectation::Expected(Bytes::from(fits.clone())), &big);
    assert_invalid(kv.compare_and_swap(cas).await, "value");
    let cas = cas_request(&key, Expectation::Expected(Bytes::from(big.clone())), "v");
    assert_invalid(kv.compare_and_swap(cas).await, "expected");
    assert_eq!(get(&mut kv, &key).await.value, fits);
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn oversized_and_empty_batches_are_invalid_arguments_naming_the_field() {
    let (_gateway, mut kv) = start_small().await;
    let prefix = unique_key("b");
    let keys = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{prefix}{i}")).collect() };
    let entries = |n: usize| -> Vec<pb::KeyValueEntry> {
        keys(n).iter().map(|key| entry(key, "v")).collect()
    };

    for n in [0, 4] {
        let get_many = pb::GetManyRequest { keys: keys(n) };
        assert_invalid(kv.get_many(get_many).await, "keys");
        assert_invalid(kv.delete(pb::DeleteRequest { keys: keys(n) }).await, "keys");
        assert_invalid(kv.exists(pb::ExistsRequest { keys: keys(n) }).await, "keys");
        let set_many = set_many_request(entries(n), None, false);
        assert_invalid(kv.set_many(set_many).await, "entries");
    }
    // Nothing of the refused SetMany was written; exactly --max-batch-items is fine.
    let three = pb::GetManyRequest { keys: keys(3) };
    let values = kv.get_many(three).await.unwrap().into_inner().values;
    assert_eq!(values.len(), 3);
    assert!(values.iter().all(|value| !value.found));
    let set_many = set_many_request(entries(3), None, false);
    assert!(kv.set_many(set_many).await.unwrap().into_inner().applied);
    // Scan pages are bounded the same way.
    let scan = pb::ScanRequest {
        pattern: "b*".into(),
        page_size: 4,
        r#type: String::new(),
    };
    assert_invalid(kv.scan(scan).await, "page_size");
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn zero_negative_and_too_long_ttls_are_invalid_arguments_naming_the_field() {
    let (_gateway, mut kv) = start_small().await;
    let key = unique_key("ttl");
    set(&mut kv, &key, "v").await;
    let proto_duration = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    let too_long = Some(duration(Duration::from_millis(3_600_001)));
    let bad_ttls = [
        proto_duration(0, 0),
        proto_duration(-5, 0),
        proto_duration(0, -1),
        too_long,
    ];

    for ttl in bad_ttls {
        let set_request = pb::SetRequest {
            ttl,
            ..set_request(&key, "changed")
        };
        assert_invalid(kv.set(set_request).await, "ttl");
        let get_request = pb::GetRequest {
            refresh_ttl: ttl,
            ..get_request(&key)
        };
        assert_invalid(kv.get(get_request).await, "refresh_ttl");
        assert_invalid(kv.expire(expire_request(&key, ttl)).await, "ttl");
        let set_many = set_many_request(vec![entry(&key, "changed")], ttl, false);
        assert_invalid(kv.set_many(set_many).await, "ttl");
        let increment = increment_request(&key, 1, ttl);
        assert_invalid(kv.increment(increment).await, "ttl");
        let cas = pb::CompareAndSwapRequest {
            ttl,
            ..cas_request(&key, Expectation::Expected(bytes("v")), "changed")
        };
        assert_invalid(kv.compare_and_swap(cas).await, "ttl");
    }
    // Expire needs a TTL.
    assert_invalid(kv.expire(expire_request(&key, None)).await, "ttl");
    assert_eq!(get(&mut kv, &key).await.value, "v");
    assert_persistent(&mut kv, &key).await;
    // Exactly --max-ttl is fine.
    let expire = kv.expire(expire_request(&key, secs(3600))).await;
    assert!(expire.unwrap().into_inner().applied);
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn ttl_with_keep_ttl_is_an_invalid_argument() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("ttl-keep");
    set(&mut kv, &key, "v").await;
    let set_request = pb::SetRequest {
        ttl: secs(10),
        keep_ttl: true,
        ..set_request(&key, "changed")
    };
    assert_invalid(kv.set(set_request).await, "keep_ttl");
    let cas = pb::CompareAndSwapRequest {
        ttl: secs(10),
        keep_ttl: true,
        ..cas_request(&key, Expectation::Expected(bytes("v")), "changed")
    };
    assert_invalid(kv.compare_and_swap(cas).await, "keep_ttl");
    assert_eq!(get(&mut kv, &key).await.value, "v");
    assert_persistent(&mut kv, &key).await;
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn non_finite_increment_float_delta_is_an_invalid_argument() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("incrf-bad");
    let text = unique_key("incrf-text");
    set(&mut kv, &key, "1.5").await;
    set(&mut kv, &text, "abc").await;
    let request = |key: &str, delta| pb::IncrementFloatRequest {
        key: key.to_owned(),
        delta,
    };
    for delta in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_invalid(kv.increment_float(request(&key, delta)).await, "delta");
    }
    assert_eq!(get(&mut kv, &key).await.value, "1.5");
    // A stored value that is not a number names the key.
    assert_invalid(kv.increment_float(request(&text, 1.0)).await, "key");
    assert_eq!(get(&mut kv, &text).await.value, "abc");
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn increment_of_non_integer_value_is_an_invalid_argument() {
    let (_gateway, mut kv) = start().await;
    for stored in ["abc", "1.5", "", "007", " 5", "99999999999999999999"] {
        for ttl in [None, secs(60)] {
            let key = unique_key("incr-text");
            set(&mut kv, &key, stored).await;
            assert_invalid(kv.increment(increment_request(&key, 1, ttl)).await, "key");
            assert_eq!(get(&mut kv, &key).await.value, stored);
            assert_persistent(&mut kv, &key).await;
        }
    }
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn increment_overflow_is_an_invalid_argument_and_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let cases = [(i64::MAX, 1), (i64::MIN, -1), (1, i64::MAX), (-2, i64::MIN)];
    for (start_value, delta) in cases {
        for ttl in [None, secs(60)] {
            let key = unique_key("incr-overflow");
            set(&mut kv, &key, &start_value.to_string()).await;
            let increment = increment_request(&key, delta, ttl);
            assert_invalid(kv.increment(increment).await, "delta");
            let stored = direct().await.get::<Option<String>, _>(&key).await.unwrap();
            assert_eq!(stored, Some(start_value.to_string()));
            assert_persistent(&mut kv, &key).await;
        }
    }
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn malformed_scan_pattern_and_unknown_type_are_invalid_arguments() {
    let (_gateway, mut kv) = start().await;
    let scan = |pattern: &str, key_type: &str| pb::ScanRequest {
        pattern: pattern.to_owned(),
        page_size: 10,
        r#type: key_type.to_owned(),
    };
    assert_invalid(kv.scan(scan("[abc", "")).await, "pattern");
    assert_invalid(kv.scan(scan("user:*\\", "")).await, "pattern");
    assert_invalid(kv.scan(scan("x", "tree")).await, "type");
    assert_invalid(kv.scan(scan("x", "STRING")).await, "type");
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn compare_and_swap_without_expectation_is_an_invalid_argument() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("cas-bad");
    let none = pb::CompareAndSwapRequest {
        expectation: None,
        ..cas_request(&key, Expectation::ExpectAbsent(true), "v")
    };
    assert_invalid(kv.compare_and_swap(none).await, "expected");
    let not_absent = cas_request(&key, Expectation::ExpectAbsent(false), "v");
    assert_invalid(kv.compare_and_swap(not_absent).await, "expect_absent");
    assert!(!get(&mut kv, &key).await.found);
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn unknown_enum_values_are_invalid_arguments() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("enum");
    set(&mut kv, &key, "v").await;
    let set_request = pb::SetRequest {
        condition: 9,
        ..set_request(&key, "changed")
    };
    assert_invalid(kv.set(set_request).await, "condition");
    let expire = pb::ExpireRequest {
        condition: 9,
        ..expire_request(&key, secs(10))
    };
    assert_invalid(kv.expire(expire).await, "condition");
    assert_eq!(get(&mut kv, &key).await.value, "v");
    assert_persistent(&mut kv, &key).await;
    assert_still_serves(&mut kv).await;
}

// ---------------------------------------------------------------------------------------------
// WRONGTYPE → FAILED_PRECONDITION

/// A hash key and a list key, created directly.
async fn hash_and_list() -> [String; 2] {
    let client = direct().await;
    let hash = unique_key("wrongtype-hash");
    let list = unique_key("wrongtype-list");
    client.hset::<i64, _, _>(&hash, ("f", "v")).await.unwrap();
    rpush(&client, &list, "x").await;
    [hash, list]
}

#[tokio::test]
async fn get_of_hash_or_list_is_failed_precondition() {
    let (_gateway, mut kv) = start().await;
    for key in hash_and_list().await {
        for (include_ttl, refresh_ttl) in [(false, None), (true, None), (false, secs(60))] {
            assert_failed_precondition(
                kv.get(pb::GetRequest {
                    key: key.clone(),
                    include_ttl,
                    refresh_ttl,
                })
                .await,
            );
        }
        assert_persistent(&mut kv, &key).await;
    }
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn increment_of_hash_or_list_is_failed_precondition() {
    let (_gateway, mut kv) = start().await;
    for key in hash_and_list().await {
        for ttl in [None, secs(60)] {
            assert_failed_precondition(
                kv.increment(pb::IncrementRequest {
                    key: key.clone(),
                    delta: 1,
                    ttl,
                })
                .await,
            );
        }
        assert_failed_precondition(
            kv.increment_float(pb::IncrementFloatRequest {
                key: key.clone(),
                delta: 1.0,
            })
            .await,
        );
        assert_persistent(&mut kv, &key).await;
    }
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn compare_and_swap_on_hash_or_list_is_failed_precondition() {
    let (_gateway, mut kv) = start().await;
    let [hash, list] = hash_and_list().await;
    for key in [&hash, &list] {
        for expectation in [
            Expectation::Expected(bytes("v")),
            Expectation::ExpectAbsent(true),
        ] {
            assert_failed_precondition(
                kv.compare_and_swap(pb::CompareAndSwapRequest {
                    key: key.clone(),
                    expectation: Some(expectation),
                    value: bytes("new"),
                    ..Default::default()
                })
                .await,
            );
        }
    }
    let client = direct().await;
    assert_eq!(
        client
            .hget::<Option<String>, _, _>(&hash, "f")
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn set_return_previous_on_hash_is_failed_precondition() {
    let (_gateway, mut kv) = start().await;
    let [hash, _] = hash_and_list().await;
    assert_failed_precondition(
        kv.set(pb::SetRequest {
            key: hash.clone(),
            value: bytes("v"),
            return_previous: true,
            ..Default::default()
        })
        .await,
    );
    let client = direct().await;
    assert_eq!(
        client
            .hget::<Option<String>, _, _>(&hash, "f")
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    assert_still_serves(&mut kv).await;
}
