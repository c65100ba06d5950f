//! Bad input: INVALID_ARGUMENT whose message names the offending field, nothing changed, and
//! the gateway keeps serving.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_compare_and_swap_request::Expectation;
use tonic::Code;

use crate::common::{Gateway, duration, unique_key};
use crate::support::{
    Kv, assert_code, assert_persistent, assert_status, assert_still_serves, bytes, cas_request,
    direct, entry, expire_request, get, get_request, increment_request, scan_request, secs, set,
    set_many_request, set_request, start, start_with,
};

/// A gateway with small limits, for the bad-input tests.
async fn start_small() -> (Gateway, Kv) {
    start_with(&[
        "--max-key-bytes",
        "16",
        "--max-value-bytes",
        "32",
        "--max-batch-items",
        "3",
        "--max-ttl",
        "1h",
    ])
    .await
}

/// Asserts INVALID_ARGUMENT whose message starts with the offending field's name.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    field: &str,
) {
    assert_status(result, Code::InvalidArgument, field);
}

#[tokio::test]
async fn empty_and_oversized_keys_are_invalid_arguments_naming_the_field() {
    let (_gateway, mut kv) = start_small().await;
    let long = "k".repeat(17);
    let fits = "k".repeat(16);
    for key in ["", long.as_str()] {
        assert_invalid(kv.get(get_request(key)).await, "key");
        assert_invalid(kv.set(set_request(key, "v")).await, "key");
        assert_invalid(kv.expire(expire_request(key, secs(1))).await, "key");
        let persist = pb::KeyValuePersistRequest { key: key.into() };
        assert_invalid(kv.persist(persist).await, "key");
        let get_ttl = pb::KeyValueGetTtlRequest { key: key.into() };
        assert_invalid(kv.get_ttl(get_ttl).await, "key");
        assert_invalid(kv.increment(increment_request(key, 1, None)).await, "key");
        let float = pb::KeyValueIncrementFloatRequest {
            key: key.into(),
            delta: 1.0,
        };
        assert_invalid(kv.increment_float(float).await, "key");
        let cas = cas_request(key, Expectation::ExpectAbsent(true), "v");
        assert_invalid(kv.compare_and_swap(cas).await, "key");
        // In a batch, the message names the item.
        let keys = vec!["a".to_owned(), "b".to_owned(), key.to_owned()];
        let get_many = pb::KeyValueGetManyRequest {
            keys: keys.clone(),
            ..Default::default()
        };
        assert_invalid(kv.get_many(get_many).await, "keys[2]");
        let delete = pb::KeyValueDeleteRequest { keys: keys.clone() };
        assert_invalid(kv.delete(delete).await, "keys[2]");
        assert_invalid(
            kv.exists(pb::KeyValueExistsRequest { keys }).await,
            "keys[2]",
        );
        let set_many = set_many_request(vec![entry("a", "v"), entry(key, "v")], None, false);
        assert_invalid(kv.set_many(set_many).await, "entries[1].key");
    }
    // Exactly --max-key-bytes is fine.
    let reply = kv.set(set_request(&fits, "v")).await.unwrap().into_inner();
    assert!(reply.applied);
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
    let reply = kv.set(set_request(&key, &fits)).await.unwrap().into_inner();
    assert!(reply.applied);
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
    // One slot: SetMany must reach its limits, not a cluster's cross-slot refusal.
    let prefix = crate::common::slot_tag("b");
    let keys = |n: usize| -> Vec<String> { (0..n).map(|i| format!("{prefix}{i}")).collect() };
    let entries = |n: usize| -> Vec<pb::KeyValueEntry> {
        keys(n).iter().map(|key| entry(key, "v")).collect()
    };

    for n in [0, 4] {
        let get_many = pb::KeyValueGetManyRequest {
            keys: keys(n),
            ..Default::default()
        };
        assert_invalid(kv.get_many(get_many).await, "keys");
        assert_invalid(
            kv.delete(pb::KeyValueDeleteRequest { keys: keys(n) }).await,
            "keys",
        );
        assert_invalid(
            kv.exists(pb::KeyValueExistsRequest { keys: keys(n) }).await,
            "keys",
        );
        let set_many = set_many_request(entries(n), None, false);
        assert_invalid(kv.set_many(set_many).await, "entries");
    }
    // Nothing of the refused SetMany was written; exactly --max-batch-items is fine.
    let three = pb::KeyValueGetManyRequest {
        keys: keys(3),
        ..Default::default()
    };
    let values = kv.get_many(three).await.unwrap().into_inner().values;
    assert_eq!(values.len(), 3);
    assert!(values.iter().all(|value| !value.found));
    let set_many = set_many_request(entries(3), None, false);
    assert!(kv.set_many(set_many).await.unwrap().into_inner().applied);
    // Scan pages are bounded the same way.
    assert_invalid(kv.scan(scan_request("b*", 4, "")).await, "page_size");
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
        let set_request = pb::KeyValueSetRequest {
            ttl,
            ..set_request(&key, "changed")
        };
        assert_invalid(kv.set(set_request).await, "ttl");
        let get_request = pb::KeyValueGetRequest {
            refresh_ttl: ttl,
            ..get_request(&key)
        };
        assert_invalid(kv.get(get_request).await, "refresh_ttl");
        assert_invalid(kv.expire(expire_request(&key, ttl)).await, "ttl");
        let set_many = set_many_request(vec![entry(&key, "changed")], ttl, false);
        assert_invalid(kv.set_many(set_many).await, "ttl");
        let increment = increment_request(&key, 1, ttl);
        assert_invalid(kv.increment(increment).await, "ttl");
        let cas = pb::KeyValueCompareAndSwapRequest {
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
    let set_request = pb::KeyValueSetRequest {
        ttl: secs(10),
        keep_ttl: true,
        ..set_request(&key, "changed")
    };
    assert_invalid(kv.set(set_request).await, "keep_ttl");
    let cas = pb::KeyValueCompareAndSwapRequest {
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
    let request = |key: &str, delta| pb::KeyValueIncrementFloatRequest {
        key: key.to_owned(),
        delta,
    };
    for delta in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_invalid(kv.increment_float(request(&key, delta)).await, "delta");
    }
    assert_eq!(get(&mut kv, &key).await.value, "1.5");
    // A stored value that is not a number names the key.
    assert_status(
        kv.increment_float(request(&text, 1.0)).await,
        Code::FailedPrecondition,
        "key",
    );
    assert_eq!(get(&mut kv, &text).await.value, "abc");
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn increment_of_non_integer_value_is_a_failed_precondition() {
    let (_gateway, mut kv) = start().await;
    for stored in ["abc", "1.5", "", "007", " 5", "99999999999999999999"] {
        for ttl in [None, secs(60)] {
            let key = unique_key("incr-text");
            set(&mut kv, &key, stored).await;
            let increment = increment_request(&key, 1, ttl);
            assert_status(
                kv.increment(increment).await,
                Code::FailedPrecondition,
                "key",
            );
            assert_eq!(get(&mut kv, &key).await.value, stored);
            assert_persistent(&mut kv, &key).await;
        }
    }
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn increment_overflow_is_a_failed_precondition_and_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let cases = [(i64::MAX, 1), (i64::MIN, -1), (1, i64::MAX), (-2, i64::MIN)];
    for (start_value, delta) in cases {
        for ttl in [None, secs(60)] {
            let key = unique_key("incr-overflow");
            set(&mut kv, &key, &start_value.to_string()).await;
            let increment = increment_request(&key, delta, ttl);
            assert_status(
                kv.increment(increment).await,
                Code::FailedPrecondition,
                "delta",
            );
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
    let scan = |pattern: &str, key_type: &str| scan_request(pattern, 10, key_type);
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
    let none = pb::KeyValueCompareAndSwapRequest {
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
    let set_request = pb::KeyValueSetRequest {
        condition: 9,
        ..set_request(&key, "changed")
    };
    assert_invalid(kv.set(set_request).await, "condition");
    let expire = pb::KeyValueExpireRequest {
        condition: 9,
        ..expire_request(&key, secs(10))
    };
    assert_invalid(kv.expire(expire).await, "condition");
    assert_eq!(get(&mut kv, &key).await.value, "v");
    assert_persistent(&mut kv, &key).await;
    assert_still_serves(&mut kv).await;
}

/// KeyValueGetRequest as raw protobuf, so a test can send a `key` that is not UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGetRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
}

#[tokio::test]
async fn undecodable_requests_are_invalid_arguments_naming_the_field() {
    let (gateway, mut kv) = start().await;
    let mut grpc = tonic::client::Grpc::new(gateway.channel().await);
    grpc.ready().await.unwrap();
    let result = grpc
        .unary(
            tonic::Request::new(RawGetRequest {
                key: vec![0xff, 0xfe],
            }),
            "/redisgateway.v1.KeyValue/Get".parse().unwrap(),
            tonic_prost::ProstCodec::<RawGetRequest, pb::KeyValueGetResponse>::default(),
        )
        .await;
    let status = assert_code(result, Code::InvalidArgument);
    assert!(
        status.message().contains("KeyValueGetRequest.key"),
        "{status:?}"
    );
    assert_still_serves(&mut kv).await;
}
