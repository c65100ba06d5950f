//! KeyValue.Transaction behaviour against a real redis-server: guards, all-or-nothing
//! operations, per-operation results and exact 64-bit counters.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, duration, shared_redis, unique_key};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::transaction_guard::{self as guard, Guard};
use redis_gateway::pb::transaction_operation::{self as op, Op};
use tonic::Code;
use tonic::transport::Channel;

type Kv = KeyValueClient<Channel>;

async fn start() -> (Gateway, Kv) {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let kv = gateway.kv().await;
    (gateway, kv)
}

async fn direct() -> Client {
    shared_redis().client().await
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn secs(n: u64) -> Option<prost_types::Duration> {
    Some(duration(Duration::from_secs(n)))
}

// Operation builders.

fn set(key: &str, value: &str) -> pb::TransactionOperation {
    set_ttl(key, value, None)
}

fn set_ttl(key: &str, value: &str, ttl: Option<prost_types::Duration>) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Set(op::Set {
            key: key.into(),
            value: bytes(value),
            ttl,
        })),
    }
}

fn delete(key: &str) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Delete(op::Delete { key: key.into() })),
    }
}

fn expire(key: &str, ttl_secs: u64) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Expire(op::Expire {
            key: key.into(),
            ttl: secs(ttl_secs),
        })),
    }
}

fn incrby(key: &str, delta: i64) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Incrby(op::IncrBy {
            key: key.into(),
            delta,
        })),
    }
}

fn hset(name: &str, fields: &[(&str, &str)]) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Hset(op::HSet {
            name: name.into(),
            fields: fields
                .iter()
                .map(|(field, value)| ((*field).to_owned(), bytes(value)))
                .collect(),
        })),
    }
}

fn hdel(name: &str, fields: &[&str]) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Hdel(op::HDel {
            name: name.into(),
            fields: fields.iter().map(|field| (*field).to_owned()).collect(),
        })),
    }
}

fn hincrby(name: &str, field: &str, delta: i64) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Hincrby(op::HIncrBy {
            name: name.into(),
            field: field.into(),
            delta,
        })),
    }
}

// Guard builders.

fn exists(key: &str) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::Exists(guard::Exists { key: key.into() })),
    }
}

fn absent(key: &str) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::Absent(guard::Absent { key: key.into() })),
    }
}

fn value_equals(key: &str, value: &str) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::ValueEquals(guard::ValueEquals {
            key: key.into(),
            value: bytes(value),
        })),
    }
}

fn hash_field_equals(name: &str, field: &str, value: &str) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::HashFieldEquals(guard::HashFieldEquals {
            name: name.into(),
            field: field.into(),
            value: bytes(value),
        })),
    }
}

fn bound(name: &str, field: &str, value: i64) -> guard::HashFieldBound {
    guard::HashFieldBound {
        name: name.into(),
        field: field.into(),
        value,
    }
}

fn at_least(name: &str, field: &str, value: i64) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::HashFieldAtLeast(bound(name, field, value))),
    }
}

fn at_most(name: &str, field: &str, value: i64) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::HashFieldAtMost(bound(name, field, value))),
    }
}

async fn run(
    kv: &mut Kv,
    guards: Vec<pb::TransactionGuard>,
    ops: Vec<pb::TransactionOperation>,
) -> Result<pb::TransactionResponse, tonic::Status> {
    kv.transaction(pb::TransactionRequest { guards, ops })
        .await
        .map(tonic::Response::into_inner)
}

/// Runs a transaction that must commit; returns its results.
async fn commit(
    kv: &mut Kv,
    guards: Vec<pb::TransactionGuard>,
    ops: Vec<pb::TransactionOperation>,
) -> Vec<i64> {
    let reply = run(kv, guards, ops).await.unwrap();
    assert!(reply.committed, "{reply:?}");
    assert_eq!(reply.failed_guard, None);
    reply.results.iter().map(|result| result.value).collect()
}

/// Runs a transaction whose guard number `index` must fail; asserts that nothing was written
/// (the transaction's only op sets a marker key).
async fn assert_guard_fails(kv: &mut Kv, guards: Vec<pb::TransactionGuard>, index: u32) {
    let marker = unique_key("tx-marker");
    let reply = run(kv, guards, vec![set(&marker, "written")])
        .await
        .unwrap();
    assert!(!reply.committed, "guard {index} held: {reply:?}");
    assert_eq!(reply.failed_guard, Some(index));
    assert!(reply.results.is_empty());
    assert_eq!(direct().await.exists::<i64, _>(&marker).await.unwrap(), 0);
}

/// Runs a transaction whose guards must all hold.
async fn assert_guards_hold(kv: &mut Kv, guards: Vec<pb::TransactionGuard>) {
    let marker = unique_key("tx-marker");
    let results = commit(kv, guards, vec![set(&marker, "written")]).await;
    assert_eq!(results, vec![1]);
    assert_eq!(
        direct()
            .await
            .get::<Option<String>, _>(&marker)
            .await
            .unwrap(),
        Some("written".to_owned())
    );
}

async fn string_of(client: &Client, key: &str) -> Option<String> {
    client.get::<Option<String>, _>(key).await.unwrap()
}

async fn hash_of(client: &Client, key: &str) -> HashMap<String, String> {
    client
        .hgetall::<HashMap<String, String>, _>(key)
        .await
        .unwrap()
}

#[track_caller]
fn assert_status(result: Result<pb::TransactionResponse, tonic::Status>, code: Code, field: &str) {
    let status = result.expect_err("the transaction should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(field),
        "message {:?} should name `{field}`",
        status.message()
    );
}

// ---------------------------------------------------------------------------------------------
// Commit

#[tokio::test]
async fn transaction_commits_and_reports_a_result_per_op() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let string = unique_key("tx-string");
    let doomed = unique_key("tx-doomed");
    let expiring = unique_key("tx-expiring");
    let counter = unique_key("tx-counter");
    let hash = unique_key("tx-hash");
    let missing = unique_key("tx-missing");
    client
        .set::<(), _, _>(&doomed, "x", None, None, false)
        .await
        .unwrap();
    client
        .set::<(), _, _>(&expiring, "x", None, None, false)
        .await
        .unwrap();
    client
        .set::<(), _, _>(&counter, "10", None, None, false)
        .await
        .unwrap();
    client.hset::<i64, _, _>(&hash, ("old", "o")).await.unwrap();

    let results = commit(
        &mut kv,
        vec![],
        vec![
            set(&string, "hello"),
            delete(&doomed),
            delete(&missing),
            expire(&expiring, 600),
            expire(&missing, 600),
            incrby(&counter, 5),
            hset(&hash, &[("a", "1"), ("b", "2"), ("old", "new")]),
            hdel(&hash, &["b", "nope"]),
            hincrby(&hash, "n", 7),
        ],
    )
    .await;
    assert_eq!(results, vec![1, 1, 0, 1, 0, 15, 2, 1, 7]);

    assert_eq!(string_of(&client, &string).await.as_deref(), Some("hello"));
    assert_eq!(client.pttl::<i64, _>(&string).await.unwrap(), -1);
    assert_eq!(client.exists::<i64, _>(&doomed).await.unwrap(), 0);
    assert_eq!(client.exists::<i64, _>(&missing).await.unwrap(), 0);
    let ttl = client.pttl::<i64, _>(&expiring).await.unwrap();
    assert!(ttl > 590_000 && ttl <= 600_000, "ttl {ttl}");
    assert_eq!(string_of(&client, &counter).await.as_deref(), Some("15"));
    assert_eq!(
        hash_of(&client, &hash).await,
        HashMap::from([
            ("old".to_owned(), "new".to_owned()),
            ("a".to_owned(), "1".to_owned()),
            ("n".to_owned(), "7".to_owned()),
        ])
    );
}

#[tokio::test]
async fn transaction_set_with_ttl_sets_it_and_without_clears_it() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let with_ttl = unique_key("tx-set-ttl");
    let cleared = unique_key("tx-set-cleared");
    client
        .set::<(), _, _>(&cleared, "old", Some(Expiration::EX(600)), None, false)
        .await
        .unwrap();
    let results = commit(
        &mut kv,
        vec![],
        vec![set_ttl(&with_ttl, "v", secs(60)), set(&cleared, "new")],
    )
    .await;
    assert_eq!(results, vec![1, 1]);
    let ttl = client.pttl::<i64, _>(&with_ttl).await.unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "ttl {ttl}");
    assert_eq!(client.pttl::<i64, _>(&cleared).await.unwrap(), -1);
    assert_eq!(string_of(&client, &cleared).await.as_deref(), Some("new"));
}

#[tokio::test]
async fn transaction_ops_see_earlier_ops() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let k = unique_key("tx-seq");
    let h = unique_key("tx-seq-hash");
    let fresh = unique_key("tx-seq-fresh");
    client
        .set::<(), _, _>(&fresh, "not a number", None, None, false)
        .await
        .unwrap();

    let results = commit(
        &mut kv,
        vec![],
        vec![
            set(&k, "5"),
            incrby(&k, 2),
            incrby(&k, 3),
            hset(&h, &[("f", "10")]),
            hincrby(&h, "f", 5),
            hdel(&h, &["f"]),
            hincrby(&h, "f", 1),
            // A key replaced within the transaction counts from its new value.
            delete(&fresh),
            incrby(&fresh, 4),
        ],
    )
    .await;
    assert_eq!(results, vec![1, 7, 10, 1, 15, 1, 1, 1, 4]);
    assert_eq!(string_of(&client, &k).await.as_deref(), Some("10"));
    assert_eq!(
        hash_of(&client, &h).await,
        HashMap::from([("f".to_owned(), "1".to_owned())])
    );
    assert_eq!(string_of(&client, &fresh).await.as_deref(), Some("4"));
}

#[tokio::test]
async fn transaction_incrby_results_are_exact_past_2_pow_53() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let counter = unique_key("tx-big");
    let hash = unique_key("tx-big-hash");
    let big = 1i64 << 60;
    client
        .set::<(), _, _>(&counter, big.to_string(), None, None, false)
        .await
        .unwrap();
    client
        .hset::<i64, _, _>(&hash, ("f", big.to_string()))
        .await
        .unwrap();
    let results = commit(
        &mut kv,
        vec![],
        vec![
            incrby(&counter, 1),
            incrby(&counter, 2),
            hincrby(&hash, "f", -1),
        ],
    )
    .await;
    assert_eq!(results, vec![big + 1, big + 3, big - 1]);
    assert_eq!(
        string_of(&client, &counter).await,
        Some((big + 3).to_string())
    );
}

#[tokio::test]
async fn transaction_incrby_may_reach_the_64_bit_limits_exactly() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let high = unique_key("tx-max");
    let low = unique_key("tx-min");
    let hash = unique_key("tx-max-hash");
    client
        .set::<(), _, _>(&high, (i64::MAX - 3).to_string(), None, None, false)
        .await
        .unwrap();
    client
        .set::<(), _, _>(&low, (i64::MIN + 3).to_string(), None, None, false)
        .await
        .unwrap();
    client
        .hset::<i64, _, _>(&hash, ("f", (i64::MAX - 1).to_string()))
        .await
        .unwrap();
    let results = commit(
        &mut kv,
        vec![],
        vec![
            incrby(&high, 2),
            incrby(&high, 1),
            incrby(&low, -3),
            hincrby(&hash, "f", 1),
            hincrby(&hash, "g", i64::MIN),
        ],
    )
    .await;
    assert_eq!(
        results,
        vec![i64::MAX - 1, i64::MAX, i64::MIN, i64::MAX, i64::MIN]
    );
    assert_eq!(string_of(&client, &high).await, Some(i64::MAX.to_string()));
    assert_eq!(string_of(&client, &low).await, Some(i64::MIN.to_string()));
}

#[tokio::test]
async fn transaction_incrby_matches_checked_64_bit_addition() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let near_max = i64::MAX - 7;
    let cases: &[(i64, i64)] = &[
        (0, 0),
        (999, 1),
        (1000, -1),
        (-1000, 1),
        (-999, -1),
        (5, -5),
        (-5, 5),
        (7, -1000),
        (-7, 1000),
        (1 << 53, 1),
        ((1 << 53) + 1, 1),
        (-(1 << 53), -3),
        (1_000_000_000_000_000_000, 8_000_000_000_000_000_000),
        (near_max, 7),
        (near_max, 8),
        (-near_max, -8),
        (-near_max, -9),
        (i64::MAX, i64::MIN),
        (i64::MIN, i64::MAX),
        (i64::MIN, 0),
        (i64::MAX, 0),
        (i64::MIN, 1),
        (i64::MAX, -1),
        (-1, i64::MIN),
        (0, i64::MIN),
        (1, i64::MAX),
    ];
    for &(start_value, delta) in cases {
        let counter = unique_key("tx-add");
        let hash = unique_key("tx-add-hash");
        client
            .set::<(), _, _>(&counter, start_value.to_string(), None, None, false)
            .await
            .unwrap();
        client
            .hset::<i64, _, _>(&hash, ("f", start_value.to_string()))
            .await
            .unwrap();
        let reply = run(
            &mut kv,
            vec![],
            vec![incrby(&counter, delta), hincrby(&hash, "f", delta)],
        )
        .await;
        match start_value.checked_add(delta) {
            Some(sum) => {
                let reply = reply.unwrap_or_else(|status| {
                    panic!("{start_value} + {delta} = {sum} was refused: {status:?}")
                });
                assert!(reply.committed);
                let results: Vec<i64> = reply.results.iter().map(|r| r.value).collect();
                assert_eq!(results, vec![sum, sum], "{start_value} + {delta}");
                assert_eq!(string_of(&client, &counter).await, Some(sum.to_string()));
            }
            None => {
                assert_status(reply, Code::InvalidArgument, "ops[0].incrby.delta");
                assert_eq!(
                    string_of(&client, &counter).await,
                    Some(start_value.to_string())
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Guards

#[tokio::test]
async fn transaction_guards_that_hold_let_it_commit() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let string = unique_key("tx-g-string");
    let hash = unique_key("tx-g-hash");
    let missing = unique_key("tx-g-missing");
    client
        .set::<(), _, _>(&string, "v", None, None, false)
        .await
        .unwrap();
    client
        .hset::<i64, _, _>(&hash, vec![("f", "abc"), ("n", "5"), ("neg", "-7")])
        .await
        .unwrap();
    assert_guards_hold(
        &mut kv,
        vec![
            exists(&string),
            exists(&hash),
            absent(&missing),
            value_equals(&string, "v"),
            hash_field_equals(&hash, "f", "abc"),
            at_least(&hash, "n", 5),
            at_least(&hash, "n", -100),
            at_most(&hash, "n", 5),
            at_most(&hash, "n", i64::MAX),
            at_least(&hash, "neg", -7),
            at_most(&hash, "neg", -7),
            at_least(&hash, "neg", i64::MIN),
            // A missing field, or a missing hash, counts as 0.
            at_least(&hash, "nofield", 0),
            at_most(&hash, "nofield", 0),
            at_least(&missing, "f", -1),
            at_most(&missing, "f", 0),
        ],
    )
    .await;
    // No guards at all: the ops always run.
    assert_guards_hold(&mut kv, vec![]).await;
}

#[tokio::test]
async fn transaction_exists_guard_fails_on_missing_key() {
    let (_gateway, mut kv) = start().await;
    let present = unique_key("tx-gx");
    direct()
        .await
        .set::<(), _, _>(&present, "v", None, None, false)
        .await
        .unwrap();
    assert_guard_fails(
        &mut kv,
        vec![exists(&present), exists(&unique_key("tx-gx-missing"))],
        1,
    )
    .await;
}

#[tokio::test]
async fn transaction_absent_guard_fails_on_existing_key_of_any_type() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let string = unique_key("tx-ga");
    let hash = unique_key("tx-ga-hash");
    client
        .set::<(), _, _>(&string, "v", None, None, false)
        .await
        .unwrap();
    client.hset::<i64, _, _>(&hash, ("f", "v")).await.unwrap();
    assert_guard_fails(&mut kv, vec![absent(&string)], 0).await;
    assert_guard_fails(
        &mut kv,
        vec![absent(&unique_key("tx-ga-missing")), absent(&hash)],
        1,
    )
    .await;
}

#[tokio::test]
async fn transaction_value_equals_guard_fails_on_other_value_missing_key_or_hash() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let string = unique_key("tx-gv");
    let hash = unique_key("tx-gv-hash");
    client
        .set::<(), _, _>(&string, "v", None, None, false)
        .await
        .unwrap();
    client.hset::<i64, _, _>(&hash, ("f", "v")).await.unwrap();
    assert_guard_fails(&mut kv, vec![value_equals(&string, "w")], 0).await;
    assert_guard_fails(&mut kv, vec![value_equals(&string, "")], 0).await;
    assert_guard_fails(
        &mut kv,
        vec![
            value_equals(&string, "v"),
            value_equals(&unique_key("tx-gv-missing"), ""),
        ],
        1,
    )
    .await;
    assert_guard_fails(&mut kv, vec![exists(&hash), value_equals(&hash, "v")], 1).await;
}

#[tokio::test]
async fn transaction_hash_field_equals_guard_fails_on_other_value_or_missing_field() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let hash = unique_key("tx-ghe");
    let string = unique_key("tx-ghe-string");
    client.hset::<i64, _, _>(&hash, ("f", "v")).await.unwrap();
    client
        .set::<(), _, _>(&string, "v", None, None, false)
        .await
        .unwrap();
    assert_guard_fails(&mut kv, vec![hash_field_equals(&hash, "f", "w")], 0).await;
    assert_guard_fails(
        &mut kv,
        vec![
            hash_field_equals(&hash, "f", "v"),
            hash_field_equals(&hash, "g", ""),
        ],
        1,
    )
    .await;
    assert_guard_fails(
        &mut kv,
        vec![hash_field_equals(&unique_key("tx-ghe-missing"), "f", "v")],
        0,
    )
    .await;
    assert_guard_fails(&mut kv, vec![hash_field_equals(&string, "f", "v")], 0).await;
}

#[tokio::test]
async fn transaction_hash_field_at_least_guard_fails_below_the_bound() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let hash = unique_key("tx-gal");
    client
        .hset::<i64, _, _>(&hash, vec![("n", "5"), ("text", "abc"), ("neg", "-3")])
        .await
        .unwrap();
    assert_guard_fails(&mut kv, vec![at_least(&hash, "n", 6)], 0).await;
    assert_guard_fails(
        &mut kv,
        vec![at_least(&hash, "n", 5), at_least(&hash, "neg", -2)],
        1,
    )
    .await;
    // A missing field or hash counts as 0.
    assert_guard_fails(
        &mut kv,
        vec![at_least(&hash, "nofield", 0), at_least(&hash, "nofield", 1)],
        1,
    )
    .await;
    assert_guard_fails(
        &mut kv,
        vec![at_least(&unique_key("tx-gal-missing"), "n", 1)],
        0,
    )
    .await;
    // A non-integer field fails the guard whatever the bound.
    assert_guard_fails(&mut kv, vec![at_least(&hash, "text", i64::MIN)], 0).await;
}

#[tokio::test]
async fn transaction_hash_field_at_most_guard_fails_above_the_bound() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let hash = unique_key("tx-gam");
    client
        .hset::<i64, _, _>(&hash, vec![("n", "5"), ("text", "abc"), ("neg", "-3")])
        .await
        .unwrap();
    assert_guard_fails(&mut kv, vec![at_most(&hash, "n", 4)], 0).await;
    assert_guard_fails(
        &mut kv,
        vec![at_most(&hash, "n", 5), at_most(&hash, "neg", -4)],
        1,
    )
    .await;
    // A missing field or hash counts as 0.
    assert_guard_fails(
        &mut kv,
        vec![at_most(&hash, "nofield", 0), at_most(&hash, "nofield", -1)],
        1,
    )
    .await;
    assert_guard_fails(
        &mut kv,
        vec![at_most(&unique_key("tx-gam-missing"), "n", -1)],
        0,
    )
    .await;
    assert_guard_fails(&mut kv, vec![at_most(&hash, "text", i64::MAX)], 0).await;
}

#[tokio::test]
async fn transaction_hash_field_bounds_compare_exactly_past_2_pow_53() {
    let (_gateway, mut kv) = start().await;
    let hash = unique_key("tx-gbig");
    let big = (1i64 << 60) + 1;
    direct()
        .await
        .hset::<i64, _, _>(&hash, ("n", big.to_string()))
        .await
        .unwrap();
    assert_guards_hold(
        &mut kv,
        vec![at_least(&hash, "n", big), at_most(&hash, "n", big)],
    )
    .await;
    assert_guard_fails(&mut kv, vec![at_least(&hash, "n", big + 1)], 0).await;
    assert_guard_fails(&mut kv, vec![at_most(&hash, "n", big - 1)], 0).await;
}

#[tokio::test]
async fn transaction_failing_guard_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let string = unique_key("tx-rb");
    let counter = unique_key("tx-rb-counter");
    let hash = unique_key("tx-rb-hash");
    client
        .set::<(), _, _>(&string, "before", None, None, false)
        .await
        .unwrap();
    client
        .set::<(), _, _>(&counter, "1", None, None, false)
        .await
        .unwrap();
    client.hset::<i64, _, _>(&hash, ("n", "3")).await.unwrap();
    let reply = run(
        &mut kv,
        vec![value_equals(&string, "before"), at_least(&hash, "n", 4)],
        vec![
            set(&string, "after"),
            incrby(&counter, 1),
            hincrby(&hash, "n", 1),
            expire(&string, 60),
            delete(&counter),
        ],
    )
    .await
    .unwrap();
    assert!(!reply.committed);
    assert_eq!(reply.failed_guard, Some(1));
    assert!(reply.results.is_empty());
    assert_eq!(string_of(&client, &string).await.as_deref(), Some("before"));
    assert_eq!(client.pttl::<i64, _>(&string).await.unwrap(), -1);
    assert_eq!(string_of(&client, &counter).await.as_deref(), Some("1"));
    assert_eq!(
        hash_of(&client, &hash).await,
        HashMap::from([("n".to_owned(), "3".to_owned())])
    );
}

// ---------------------------------------------------------------------------------------------
// All or nothing on errors

#[tokio::test]
async fn transaction_type_clash_is_failed_precondition_and_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let string = unique_key("tx-tc-string");
    let hash = unique_key("tx-tc-hash");
    let written = unique_key("tx-tc-written");
    let counter = unique_key("tx-tc-counter");
    client
        .set::<(), _, _>(&string, "text", None, None, false)
        .await
        .unwrap();
    client
        .set::<(), _, _>(&counter, "1", None, None, false)
        .await
        .unwrap();
    client.hset::<i64, _, _>(&hash, ("f", "1")).await.unwrap();

    // incrby on a hash, after writes to other keys.
    let result = run(
        &mut kv,
        vec![],
        vec![
            set(&written, "x"),
            incrby(&counter, 1),
            hincrby(&hash, "f", 1),
            incrby(&hash, 1),
        ],
    )
    .await;
    assert_status(result, Code::FailedPrecondition, "ops[3]");

    // hset on a string.
    let result = run(
        &mut kv,
        vec![],
        vec![
            set(&written, "x"),
            incrby(&counter, 1),
            hset(&string, &[("f", "v")]),
        ],
    )
    .await;
    assert_status(result, Code::FailedPrecondition, "ops[2]");

    // hdel / hincrby on a string, and on a string set earlier in the same transaction.
    let result = run(
        &mut kv,
        vec![],
        vec![incrby(&counter, 1), hdel(&string, &["f"])],
    )
    .await;
    assert_status(result, Code::FailedPrecondition, "ops[1]");
    let result = run(
        &mut kv,
        vec![],
        vec![set(&written, "x"), hincrby(&written, "f", 1)],
    )
    .await;
    assert_status(result, Code::FailedPrecondition, "ops[1]");
    // incrby on a key turned into a hash earlier in the same transaction.
    let result = run(
        &mut kv,
        vec![],
        vec![hset(&written, &[("f", "1")]), incrby(&written, 1)],
    )
    .await;
    assert_status(result, Code::FailedPrecondition, "ops[1]");

    assert_eq!(client.exists::<i64, _>(&written).await.unwrap(), 0);
    assert_eq!(string_of(&client, &counter).await.as_deref(), Some("1"));
    assert_eq!(string_of(&client, &string).await.as_deref(), Some("text"));
    assert_eq!(
        hash_of(&client, &hash).await,
        HashMap::from([("f".to_owned(), "1".to_owned())])
    );
}

#[tokio::test]
async fn transaction_incrby_overflow_in_a_later_op_is_invalid_argument_and_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let written = unique_key("tx-of-written");
    let max = unique_key("tx-of-max");
    let min = unique_key("tx-of-min");
    let hash = unique_key("tx-of-hash");
    client
        .set::<(), _, _>(&max, i64::MAX.to_string(), None, None, false)
        .await
        .unwrap();
    client
        .set::<(), _, _>(&min, i64::MIN.to_string(), None, None, false)
        .await
        .unwrap();
    client
        .hset::<i64, _, _>(&hash, ("f", i64::MAX.to_string()))
        .await
        .unwrap();

    let result = run(
        &mut kv,
        vec![],
        vec![set(&written, "x"), incrby(&max, -1), incrby(&max, 2)],
    )
    .await;
    assert_status(result, Code::InvalidArgument, "ops[2].incrby.delta");

    let result = run(&mut kv, vec![], vec![set(&written, "x"), incrby(&min, -1)]).await;
    assert_status(result, Code::InvalidArgument, "ops[1].incrby.delta");

    let result = run(
        &mut kv,
        vec![],
        vec![set(&written, "x"), hincrby(&hash, "f", 1)],
    )
    .await;
    assert_status(result, Code::InvalidArgument, "ops[1].hincrby.delta");

    // Two increments that overflow only together.
    let result = run(
        &mut kv,
        vec![],
        vec![
            set(&written, "0"),
            incrby(&written, i64::MAX),
            incrby(&written, 1),
        ],
    )
    .await;
    assert_status(result, Code::InvalidArgument, "ops[2].incrby.delta");

    let fresh = unique_key("tx-of-fresh");
    let result = run(
        &mut kv,
        vec![],
        vec![incrby(&fresh, i64::MAX), incrby(&fresh, 1)],
    )
    .await;
    assert_status(result, Code::InvalidArgument, "ops[1].incrby.delta");

    assert_eq!(client.exists::<i64, _>(&written).await.unwrap(), 0);
    assert_eq!(client.exists::<i64, _>(&fresh).await.unwrap(), 0);
    assert_eq!(string_of(&client, &max).await, Some(i64::MAX.to_string()));
    assert_eq!(string_of(&client, &min).await, Some(i64::MIN.to_string()));
    assert_eq!(
        hash_of(&client, &hash).await,
        HashMap::from([("f".to_owned(), i64::MAX.to_string())])
    );
}

#[tokio::test]
async fn transaction_incrby_of_non_integer_is_invalid_argument_and_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let written = unique_key("tx-ni-written");
    let hash = unique_key("tx-ni-hash");
    // Redis accepts only canonical integers: no leading zeros, no "-0", no spaces or "+".
    for stored in [
        "abc",
        "1.5",
        "",
        "007",
        "-0",
        "+5",
        " 5",
        "99999999999999999999",
    ] {
        let counter = unique_key("tx-ni");
        client
            .set::<(), _, _>(&counter, stored, None, None, false)
            .await
            .unwrap();
        client
            .hset::<i64, _, _>(&hash, ("f", stored))
            .await
            .unwrap();
        let result = run(
            &mut kv,
            vec![],
            vec![set(&written, "x"), incrby(&counter, 1)],
        )
        .await;
        assert_status(result, Code::InvalidArgument, "ops[1].incrby");
        let result = run(
            &mut kv,
            vec![],
            vec![set(&written, "x"), hincrby(&hash, "f", 1)],
        )
        .await;
        assert_status(result, Code::InvalidArgument, "ops[1].hincrby");
        assert_eq!(
            client.exists::<i64, _>(&written).await.unwrap(),
            0,
            "a transaction failing on {stored:?} wrote its first op"
        );
        assert_eq!(string_of(&client, &counter).await.as_deref(), Some(stored));
        assert_eq!(
            client
                .hget::<Option<String>, _, _>(&hash, "f")
                .await
                .unwrap()
                .as_deref(),
            Some(stored)
        );
    }
    // A value set earlier in the same transaction is checked too.
    let result = run(
        &mut kv,
        vec![],
        vec![set(&written, "007"), incrby(&written, 1)],
    )
    .await;
    assert_status(result, Code::InvalidArgument, "ops[1].incrby");
    assert_eq!(client.exists::<i64, _>(&written).await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn transaction_bad_input_is_invalid_argument_naming_the_field() {
    let gateway = Gateway::start(
        &shared_redis().url(),
        &["--max-batch-items", "3", "--max-key-bytes", "16"],
    )
    .await;
    let mut kv = gateway.kv().await;
    let key = unique_key("txb");
    let empty_guard = pb::TransactionGuard { guard: None };
    let empty_op = pb::TransactionOperation { op: None };

    assert_status(
        run(&mut kv, vec![empty_guard], vec![set(&key, "x")]).await,
        Code::InvalidArgument,
        "guards[0]",
    );
    assert_status(
        run(&mut kv, vec![], vec![set(&key, "x"), empty_op]).await,
        Code::InvalidArgument,
        "ops[1]",
    );
    assert_status(
        run(&mut kv, vec![], vec![]).await,
        Code::InvalidArgument,
        "ops",
    );
    assert_status(
        run(
            &mut kv,
            vec![absent(&key), absent(&key)],
            vec![set(&key, "x"), set(&key, "y")],
        )
        .await,
        Code::InvalidArgument,
        "guards",
    );
    assert_status(
        run(&mut kv, vec![], vec![set("", "x")]).await,
        Code::InvalidArgument,
        "ops[0].set.key",
    );
    assert_status(
        run(&mut kv, vec![exists(&"k".repeat(17))], vec![set(&key, "x")]).await,
        Code::InvalidArgument,
        "guards[0].exists.key",
    );
    assert_status(
        run(
            &mut kv,
            vec![],
            vec![pb::TransactionOperation {
                op: Some(Op::Expire(op::Expire {
                    key: key.clone(),
                    ttl: None,
                })),
            }],
        )
        .await,
        Code::InvalidArgument,
        "ops[0].expire.ttl",
    );
    assert_status(
        run(&mut kv, vec![], vec![hset(&key, &[])]).await,
        Code::InvalidArgument,
        "ops[0].hset.fields",
    );
    assert_status(
        run(&mut kv, vec![], vec![hdel(&key, &[])]).await,
        Code::InvalidArgument,
        "ops[0].hdel.fields",
    );
    assert_status(
        run(&mut kv, vec![], vec![hincrby(&key, "", 1)]).await,
        Code::InvalidArgument,
        "ops[0].hincrby.field",
    );
    assert_status(
        run(&mut kv, vec![at_least(&key, "", 1)], vec![set(&key, "x")]).await,
        Code::InvalidArgument,
        "guards[0].hash_field_at_least.field",
    );
    assert_eq!(direct().await.exists::<i64, _>(&key).await.unwrap(), 0);

    // The gateway keeps serving.
    let results = commit(&mut kv, vec![absent(&key)], vec![set(&key, "ok")]).await;
    assert_eq!(results, vec![1]);
    let got = kv
        .get(pb::GetRequest {
            key,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, "ok");
}

#[tokio::test]
async fn transaction_sees_a_hash_emptied_by_hdel_as_gone() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let name = unique_key("tx-emptied");
    client
        .hset::<i64, _, _>(&name, vec![("a", "1"), ("b", "2")])
        .await
        .unwrap();
    // Redis deletes a hash with its last field, so the key may then become a counter.
    let results = commit(
        &mut kv,
        vec![],
        vec![hdel(&name, &["a", "b", "a"]), incrby(&name, 5)],
    )
    .await;
    assert_eq!(results, vec![2, 5]);
    assert_eq!(string_of(&client, &name).await.as_deref(), Some("5"));

    // A hash that keeps a field is still a hash: nothing is written.
    client.del::<i64, _>(&name).await.unwrap();
    client
        .hset::<i64, _, _>(&name, vec![("a", "1"), ("b", "2")])
        .await
        .unwrap();
    let result = run(&mut kv, vec![], vec![hdel(&name, &["a"]), incrby(&name, 5)]).await;
    assert_status(result, Code::FailedPrecondition, "ops[1]");
    assert_eq!(
        hash_of(&client, &name).await.len(),
        2,
        "nothing was written"
    );
}
