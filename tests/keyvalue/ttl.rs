//! TTLs: Expire and its conditions, Persist, GetTtl, Get's refresh_ttl, and TTLs set by
//! Set, Expire, SetMany and CompareAndSwap really expiring.

use std::time::{Duration, Instant};

use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_compare_and_swap_request::Expectation;
use redis_gateway::pb::key_value_expire_request::Condition;
use redis_gateway::pb::ttl_status::State;

use crate::common::unique_key;
use crate::support::{
    Kv, assert_expiring, assert_expiring_status, assert_persistent, cas_request, create_hash,
    direct, expire_request, get, get_with, millis, secs, set, set_many, set_with_ttl, start,
    ttl_of, wait_until_gone,
};

// ---------------------------------------------------------------------------------------------
// Expire / Persist / GetTtl

/// Expire of `key` under `condition`; whether it was applied.
async fn expire(
    kv: &mut Kv,
    key: &str,
    ttl: Option<prost_types::Duration>,
    condition: Condition,
) -> bool {
    let request = pb::KeyValueExpireRequest {
        condition: condition.into(),
        ..expire_request(key, ttl)
    };
    kv.expire(request).await.unwrap().into_inner().applied
}

/// Persist of `key`; whether a TTL was removed.
async fn persist(kv: &mut Kv, key: &str) -> bool {
    let request = pb::KeyValuePersistRequest {
        key: key.to_owned(),
    };
    kv.persist(request).await.unwrap().into_inner().applied
}

#[tokio::test]
async fn expire_always_sets_the_ttl_of_an_existing_key() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("exp-always");
    set(&mut kv, &key, "v").await;
    assert!(expire(&mut kv, &key, secs(100), Condition::Always).await);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;
    // ALWAYS also shortens or lengthens an existing TTL.
    assert!(expire(&mut kv, &key, secs(500), Condition::Always).await);
    assert_expiring(&mut kv, &key, 490_000, 500_000).await;
    assert!(expire(&mut kv, &key, secs(50), Condition::Always).await);
    assert_expiring(&mut kv, &key, 40_000, 50_000).await;
}

#[tokio::test]
async fn expire_on_missing_key_is_not_applied_for_any_condition() {
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
            !expire(&mut kv, &key, secs(100), condition).await,
            "{condition:?}"
        );
    }
    assert_eq!(ttl_of(&mut kv, &key).await, (State::Missing, None));
}

#[tokio::test]
async fn expire_if_no_ttl_only_applies_to_persistent_keys() {
    let (_gateway, mut kv) = start().await;
    let persistent = unique_key("exp-nx-p");
    set(&mut kv, &persistent, "v").await;
    assert!(expire(&mut kv, &persistent, secs(100), Condition::IfNoTtl).await);
    assert_expiring(&mut kv, &persistent, 90_000, 100_000).await;

    let expiring = unique_key("exp-nx-e");
    set_with_ttl(&mut kv, &expiring, "v", secs(100)).await;
    assert!(!expire(&mut kv, &expiring, secs(500), Condition::IfNoTtl).await);
    assert_expiring(&mut kv, &expiring, 90_000, 100_000).await;
}

#[tokio::test]
async fn expire_if_has_ttl_only_applies_to_expiring_keys() {
    let (_gateway, mut kv) = start().await;
    let persistent = unique_key("exp-xx-p");
    set(&mut kv, &persistent, "v").await;
    assert!(!expire(&mut kv, &persistent, secs(100), Condition::IfHasTtl).await);
    assert_persistent(&mut kv, &persistent).await;

    let expiring = unique_key("exp-xx-e");
    set_with_ttl(&mut kv, &expiring, "v", secs(100)).await;
    assert!(expire(&mut kv, &expiring, secs(500), Condition::IfHasTtl).await);
    assert_expiring(&mut kv, &expiring, 490_000, 500_000).await;
}

#[tokio::test]
async fn expire_if_greater_only_lengthens_and_never_applies_to_persistent_keys() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("exp-gt");
    set_with_ttl(&mut kv, &key, "v", secs(100)).await;
    assert!(!expire(&mut kv, &key, secs(50), Condition::IfGreater).await);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;
    assert!(expire(&mut kv, &key, secs(200), Condition::IfGreater).await);
    assert_expiring(&mut kv, &key, 190_000, 200_000).await;

    let persistent = unique_key("exp-gt-p");
    set(&mut kv, &persistent, "v").await;
    assert!(!expire(&mut kv, &persistent, secs(100), Condition::IfGreater).await);
    assert_persistent(&mut kv, &persistent).await;
}

#[tokio::test]
async fn expire_if_less_only_shortens_and_always_applies_to_persistent_keys() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("exp-lt");
    set_with_ttl(&mut kv, &key, "v", secs(100)).await;
    assert!(!expire(&mut kv, &key, secs(200), Condition::IfLess).await);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;
    assert!(expire(&mut kv, &key, secs(50), Condition::IfLess).await);
    assert_expiring(&mut kv, &key, 40_000, 50_000).await;

    let persistent = unique_key("exp-lt-p");
    set(&mut kv, &persistent, "v").await;
    assert!(expire(&mut kv, &persistent, secs(100), Condition::IfLess).await);
    assert_expiring(&mut kv, &persistent, 90_000, 100_000).await;
}

#[tokio::test]
async fn persist_removes_the_ttl() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("persist");
    set_with_ttl(&mut kv, &key, "v", secs(100)).await;
    assert!(persist(&mut kv, &key).await);
    assert_persistent(&mut kv, &key).await;
    assert_eq!(get(&mut kv, &key).await.value, "v");
    // No TTL left to remove, and a missing key has none.
    assert!(!persist(&mut kv, &key).await);
    assert!(!persist(&mut kv, &unique_key("persist-missing")).await);
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
    create_hash(&hash).await;
    assert_persistent(&mut kv, &hash).await;
}

// ---------------------------------------------------------------------------------------------
// Get with refresh_ttl

#[tokio::test]
async fn get_refresh_ttl_resets_the_ttl() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("refresh");
    set_with_ttl(&mut kv, &key, "v", secs(10)).await;
    let got = get_with(&mut kv, &key, true, secs(3600)).await;
    assert!(got.found);
    assert_eq!(got.value, "v");
    assert_expiring_status(got.ttl, 3_590_000, 3_600_000);
    assert_expiring(&mut kv, &key, 3_590_000, 3_600_000).await;

    // A persistent key gets the TTL too.
    let persistent = unique_key("refresh-persistent");
    set(&mut kv, &persistent, "v").await;
    let got = get_with(&mut kv, &persistent, false, secs(60)).await;
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
        let got = get_with(&mut kv, &key, false, millis(400)).await;
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
    let got = get_with(&mut kv, &key, true, secs(60)).await;
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
    let ttl = Some(prost_types::Duration {
        seconds: 100,
        nanos: 1,
    });
    assert!(expire(&mut kv, &key, ttl, Condition::Always).await);
    assert_expiring(&mut kv, &key, 99_000, 100_001).await;
}

#[tokio::test]
async fn expire_really_expires() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("expire-expires");
    set(&mut kv, &key, "v").await;
    assert!(expire(&mut kv, &key, millis(300), Condition::Always).await);
    assert!(get(&mut kv, &key).await.found);
    wait_until_gone(&mut kv, &key, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn set_many_ttl_really_expires() {
    let (_gateway, mut kv) = start().await;
    let keys = [unique_key("many-exp"), unique_key("many-exp")];
    let reply = set_many(&mut kv, &keys, "v", millis(400), false).await;
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
    let request = pb::KeyValueCompareAndSwapRequest {
        ttl: millis(400),
        ..cas_request(&key, Expectation::ExpectAbsent(true), "v")
    };
    let reply = kv.compare_and_swap(request).await.unwrap().into_inner();
    assert!(reply.swapped);
    assert!(get(&mut kv, &key).await.found);
    wait_until_gone(&mut kv, &key, Duration::from_secs(3)).await;
}
