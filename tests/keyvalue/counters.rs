//! Increment and IncrementFloat: counters from zero, the 64-bit limits, and TTL windows.

use std::time::Duration;

use redis_gateway::pb;

use crate::common::unique_key;
use crate::support::{
    ExpiryWatch, Kv, assert_expiring, assert_persistent, get, increment_request, millis, secs, set,
    start,
};

/// Increment of `key` by `delta`; the new value.
async fn increment(kv: &mut Kv, key: &str, delta: i64, ttl: Option<prost_types::Duration>) -> i64 {
    let request = increment_request(key, delta, ttl);
    kv.increment(request).await.unwrap().into_inner().value
}

/// IncrementFloat of `key` by `delta`; the new value.
async fn increment_float(kv: &mut Kv, key: &str, delta: f64) -> f64 {
    let request = pb::KeyValueIncrementFloatRequest {
        key: key.to_owned(),
        delta,
    };
    kv.increment_float(request)
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
    let expiry = ExpiryWatch::start().await;
    let key = unique_key("window-exp");
    assert_eq!(increment(&mut kv, &key, 1, millis(300)).await, 1);
    expiry
        .assert_expired(&mut kv, &[&key], Duration::from_secs(10))
        .await;
    // Had the window not expired, this would count 2; it starts a new one with a new TTL.
    assert_eq!(increment(&mut kv, &key, 1, secs(60)).await, 1);
    assert_expiring(&mut kv, &key, 50_000, 60_000).await;
}

#[tokio::test]
async fn increment_float_adds_to_a_value_starting_at_zero() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("incrf");
    assert_eq!(increment_float(&mut kv, &key, 1.5).await, 1.5);
    assert_eq!(increment_float(&mut kv, &key, 2.25).await, 3.75);
    assert_eq!(increment_float(&mut kv, &key, -4.0).await, -0.25);
    assert_eq!(get(&mut kv, &key).await.value, "-0.25");

    let integer = unique_key("incrf-int");
    set(&mut kv, &integer, "10").await;
    assert_eq!(increment_float(&mut kv, &integer, 0.5).await, 10.5);
}
