//! TTLs: Expire and its conditions, Persist, GetTtl, Get's refresh_ttl, and TTLs set by
//! Set, Expire, SetMany and CompareAndSwap really expiring.
//!
//! A key checked as still there gets a TTL of a minute, so a slow machine cannot expire it
//! mid-test; short TTLs are only for keys that must go, and [`ExpiryWatch`] checks that those
//! existed and expired (rather than were never written).

use std::time::Duration;

use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_compare_and_swap_request::Expectation;
use redis_gateway::pb::key_value_expire_request::Condition;
use redis_gateway::pb::ttl_status::State;

use crate::common::{slot_tag, unique_key};
use crate::support::{
    ExpiryWatch, Kv, assert_expiring, assert_expiring_status, assert_persistent, cas_request,
    create_hash, direct, expire_request, get, get_with, millis, secs, set, set_many, set_with_ttl,
    start, ttl_of,
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
async fn get_refresh_ttl_moves_the_expiry_on_every_read() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("sliding");
    set_with_ttl(&mut kv, &key, "v", secs(60)).await;
    // Each read sets the TTL to refresh_ttl from now, whether longer or shorter than before.
    assert!(get_with(&mut kv, &key, false, secs(120)).await.found);
    assert_expiring(&mut kv, &key, 110_000, 120_000).await;
    assert!(get_with(&mut kv, &key, false, secs(90)).await.found);
    assert_expiring(&mut kv, &key, 80_000, 90_000).await;
    // Once the reads stop, the last refresh_ttl runs out.
    let expiry = ExpiryWatch::start().await;
    let got = get_with(&mut kv, &key, false, millis(300)).await;
    assert!(got.found);
    assert_eq!(got.value, "v");
    expiry
        .assert_expired(&mut kv, &[&key], Duration::from_secs(10))
        .await;
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
    let lasting = unique_key("expires-lasting");
    set_with_ttl(&mut kv, &lasting, "long-lived", secs(60)).await;
    assert_eq!(get(&mut kv, &lasting).await.value, "long-lived");
    assert_expiring(&mut kv, &lasting, 50_000, 60_000).await;

    let expiry = ExpiryWatch::start().await;
    let key = unique_key("expires");
    set_with_ttl(&mut kv, &key, "short-lived", millis(300)).await;
    expiry
        .assert_expired(&mut kv, &[&key], Duration::from_secs(10))
        .await;
    assert_eq!(ttl_of(&mut kv, &key).await, (State::Missing, None));
}

#[tokio::test]
async fn sub_millisecond_ttl_rounds_up_instead_of_being_rejected() {
    let (_gateway, mut kv) = start().await;
    let expiry = ExpiryWatch::start().await;
    let key = unique_key("round-up");
    let one_nanosecond = Some(prost_types::Duration {
        seconds: 0,
        nanos: 1,
    });
    set_with_ttl(&mut kv, &key, "v", one_nanosecond).await;
    // It became a 1 ms TTL, not "no TTL": the key was written and expired.
    expiry
        .assert_expired(&mut kv, &[&key], Duration::from_secs(10))
        .await;

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
    let expiry = ExpiryWatch::start().await;
    let key = unique_key("expire-expires");
    set(&mut kv, &key, "v").await;
    assert!(expire(&mut kv, &key, millis(300), Condition::Always).await);
    expiry
        .assert_expired(&mut kv, &[&key], Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn set_many_ttl_really_expires() {
    let (_gateway, mut kv) = start().await;
    // SetMany is atomic: on a cluster its keys must share a slot.
    let tag = slot_tag("many-lasting");
    let lasting = [format!("{tag}:1"), format!("{tag}:2")];
    assert!(
        set_many(&mut kv, &lasting, "v", secs(60), false)
            .await
            .applied
    );
    for key in &lasting {
        assert!(get(&mut kv, key).await.found);
        assert_expiring(&mut kv, key, 50_000, 60_000).await;
    }

    let expiry = ExpiryWatch::start().await;
    let tag = slot_tag("many-exp");
    let keys = [format!("{tag}:1"), format!("{tag}:2")];
    assert!(
        set_many(&mut kv, &keys, "v", millis(300), false)
            .await
            .applied
    );
    expiry
        .assert_expired(&mut kv, &[&keys[0], &keys[1]], Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn compare_and_swap_ttl_really_expires() {
    let (_gateway, mut kv) = start().await;
    let swap = |key: &str, ttl| pb::KeyValueCompareAndSwapRequest {
        ttl,
        ..cas_request(key, Expectation::ExpectAbsent(true), "v")
    };
    let lasting = unique_key("cas-lasting");
    let reply = kv.compare_and_swap(swap(&lasting, secs(60))).await.unwrap();
    assert!(reply.into_inner().swapped);
    assert!(get(&mut kv, &lasting).await.found);
    assert_expiring(&mut kv, &lasting, 50_000, 60_000).await;

    let expiry = ExpiryWatch::start().await;
    let key = unique_key("cas-exp");
    let reply = kv.compare_and_swap(swap(&key, millis(300))).await.unwrap();
    assert!(reply.into_inner().swapped);
    expiry
        .assert_expired(&mut kv, &[&key], Duration::from_secs(10))
        .await;
}
