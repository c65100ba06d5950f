//! CompareAndSwap: swaps on a match, the current value on a mismatch, expect_absent, TTL
//! handling, and exactly one winner among concurrent writers.

use std::sync::Arc;

use bytes::Bytes;
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_compare_and_swap_request::Expectation;

use crate::common::unique_key;
use crate::support::{
    Kv, assert_expiring, assert_persistent, bytes, cas_request, direct, get, secs, set,
    set_with_ttl, start,
};

/// A CompareAndSwap that must answer.
async fn swap(
    kv: &mut Kv,
    request: pb::KeyValueCompareAndSwapRequest,
) -> pb::KeyValueCompareAndSwapResponse {
    kv.compare_and_swap(request).await.unwrap().into_inner()
}

/// A CompareAndSwap without TTL or keep_ttl.
async fn cas(
    kv: &mut Kv,
    key: &str,
    expectation: Expectation,
    value: &str,
) -> pb::KeyValueCompareAndSwapResponse {
    swap(kv, cas_request(key, expectation, value)).await
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
    let request = |expected: &str, value: &str, ttl, keep_ttl| pb::KeyValueCompareAndSwapRequest {
        ttl,
        keep_ttl,
        ..cas_request(&key, Expectation::Expected(bytes(expected)), value)
    };

    let reply = swap(&mut kv, request("v1", "v2", secs(100), false)).await;
    assert!(reply.swapped);
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;

    let reply = swap(&mut kv, request("v2", "v3", None, true)).await;
    assert!(reply.swapped);
    assert_eq!(get(&mut kv, &key).await.value, "v3");
    assert_expiring(&mut kv, &key, 90_000, 100_000).await;

    let reply = swap(&mut kv, request("v3", "v4", None, false)).await;
    assert!(reply.swapped);
    assert_eq!(get(&mut kv, &key).await.value, "v4");
    assert_persistent(&mut kv, &key).await;

    // A failed swap leaves the TTL alone.
    set_with_ttl(&mut kv, &key, "v5", secs(100)).await;
    let reply = swap(&mut kv, request("nope", "v6", secs(3600), false)).await;
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
                    let expectation = Expectation::Expected(bytes(&expected));
                    let reply = cas(&mut client, &key, expectation, &mine).await;
                    (mine, reply)
                })
            })
            .collect();
        let outcomes: Vec<(String, pb::KeyValueCompareAndSwapResponse)> =
            futures::future::join_all(tasks)
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
