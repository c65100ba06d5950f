//! WRONGTYPE: string calls on a hash or list key fail with FAILED_PRECONDITION, change
//! nothing, and the gateway keeps serving.

use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::compare_and_swap_request::Expectation;
use tonic::Code;

use crate::common::unique_key;
use crate::support::{assert_persistent, assert_still_serves, bytes, direct, rpush, secs, start};

#[track_caller]
fn assert_failed_precondition<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) {
    let status = result.expect_err("expected FAILED_PRECONDITION");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

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
