//! WRONGTYPE: string calls on a hash or list key fail with FAILED_PRECONDITION, change
//! nothing, and the gateway keeps serving.

use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_compare_and_swap_request::Expectation;
use tonic::Code;

use crate::common::unique_key;
use crate::support::{
    assert_code, assert_persistent, assert_still_serves, bytes, cas_request, create_hash_and_list,
    direct, increment_request, secs, set_request, start,
};

#[track_caller]
fn assert_failed_precondition<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
) {
    assert_code(result, Code::FailedPrecondition);
}

/// A hash key and a list key, created directly.
async fn hash_and_list() -> [String; 2] {
    let hash = unique_key("wrongtype-hash");
    let list = unique_key("wrongtype-list");
    create_hash_and_list(&hash, &list).await;
    [hash, list]
}

/// Asserts that field `f` of `hash` still holds `v`.
async fn assert_hash_unchanged(hash: &str) {
    let client = direct().await;
    let field = client.hget::<Option<String>, _, _>(hash, "f").await;
    assert_eq!(field.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn get_of_hash_or_list_is_failed_precondition_naming_the_type() {
    let (_gateway, mut kv) = start().await;
    for (key, actual) in hash_and_list().await.into_iter().zip(["hash", "list"]) {
        for (include_ttl, refresh_ttl) in [(false, None), (true, None), (false, secs(60))] {
            let request = pb::KeyValueGetRequest {
                key: key.clone(),
                include_ttl,
                refresh_ttl,
                near_cache: false,
            };
            let status = assert_code(kv.get(request).await, Code::FailedPrecondition);
            assert!(
                status.message().contains(&format!("holds a {actual}"))
                    && status.message().contains("works on a string"),
                "{}",
                status.message()
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
            assert_failed_precondition(kv.increment(increment_request(&key, 1, ttl)).await);
        }
        let float = pb::KeyValueIncrementFloatRequest {
            key: key.clone(),
            delta: 1.0,
        };
        assert_failed_precondition(kv.increment_float(float).await);
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
            let cas = cas_request(key, expectation, "new");
            assert_failed_precondition(kv.compare_and_swap(cas).await);
        }
    }
    assert_hash_unchanged(&hash).await;
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn set_return_previous_on_hash_is_failed_precondition() {
    let (_gateway, mut kv) = start().await;
    let [hash, _] = hash_and_list().await;
    let request = pb::KeyValueSetRequest {
        return_previous: true,
        ..set_request(&hash, "v")
    };
    assert_failed_precondition(kv.set(request).await);
    assert_hash_unchanged(&hash).await;
    assert_still_serves(&mut kv).await;
}
