//! Get and Set: binary round trips, write conditions, previous values, keep_ttl, a TTL on
//! Set, and Get's include_ttl.

use bytes::Bytes;
use redis_gateway::pb;
use redis_gateway::pb::key_value_set_request::Condition;
use redis_gateway::pb::ttl_status::State;

use crate::common::{Gateway, shared_redis, unique_key};
use crate::support::{
    assert_expiring, assert_expiring_status, assert_persistent, get, get_with, secs, set,
    set_request, set_with_ttl, start,
};

/// A KeyValueSetRequest of `value` at `key` under `condition`.
fn conditional_set(
    key: &str,
    value: &str,
    condition: Condition,
    return_previous: bool,
) -> pb::KeyValueSetRequest {
    pb::KeyValueSetRequest {
        condition: condition.into(),
        return_previous,
        ..set_request(key, value)
    }
}

#[tokio::test]
async fn set_then_get_round_trips_binary_values() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("roundtrip");
    let value = Bytes::from_static(b"\x00\xffbinary\n");
    let set = kv
        .set(set_request(&key, &value))
        .await
        .unwrap()
        .into_inner();
    assert!(set.applied);
    let got = get(&mut kv, &key).await;
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
    let request = |value: &str, return_previous| {
        conditional_set(&key, value, Condition::Always, return_previous)
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
    let request = |value: &str, return_previous| {
        conditional_set(&key, value, Condition::IfAbsent, return_previous)
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
    let request = conditional_set(&key, "new", Condition::IfAbsent, true);
    let reply = kv.set(request).await.unwrap().into_inner();
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
        let request =
            |value: &str| conditional_set(&key, value, Condition::IfPresent, return_previous);
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

    let request = pb::KeyValueSetRequest {
        keep_ttl: true,
        ..set_request(&key, "v2")
    };
    let kept = kv.set(request).await.unwrap().into_inner();
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
    let missing = get_with(&mut kv, &unique_key("ttl-missing"), true, None).await;
    assert!(!missing.found);
    let status = missing.ttl.expect("ttl is set when include_ttl");
    assert_eq!(status.state(), State::Missing);
    assert!(status.ttl.is_none());

    let persistent_key = unique_key("ttl-persistent");
    set(&mut kv, &persistent_key, "p").await;
    let persistent = get_with(&mut kv, &persistent_key, true, None).await;
    assert!(persistent.found);
    assert_eq!(persistent.value, "p");
    let status = persistent.ttl.unwrap();
    assert_eq!(status.state(), State::Persistent);
    assert!(status.ttl.is_none());

    let expiring_key = unique_key("ttl-expiring");
    set_with_ttl(&mut kv, &expiring_key, "e", secs(10)).await;
    let expiring = get_with(&mut kv, &expiring_key, true, None).await;
    assert!(expiring.found);
    assert_eq!(expiring.value, "e");
    assert_expiring_status(expiring.ttl, 9_000, 10_000);
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
