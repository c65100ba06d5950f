//! Guards: Exists, Absent, ValueEquals, HashFieldEquals and the hash-field bounds; guards that
//! hold let the transaction commit, a failing one is reported by index and writes nothing.

use std::collections::HashMap;

use fred::prelude::*;
use redis_gateway::pb;

use crate::support::unique_key;
use crate::support::{
    Kv, absent, at_least, at_most, commit, delete, direct, exists, expire, hash_field_equals,
    hash_of, hincrby, incrby, put_hash, put_string, run, set, start, string_of, value_equals,
};

/// Asserts that a transaction did not commit because guard number `index` failed.
#[track_caller]
fn assert_guard_failed(reply: &pb::KeyValueTransactionResponse, index: u32) {
    assert!(!reply.committed, "guard {index} held: {reply:?}");
    assert_eq!(reply.failed_guard, Some(index));
    assert!(reply.results.is_empty());
}

/// Runs a transaction whose guard number `index` must fail; asserts that nothing was written
/// (the transaction's only op sets a marker key).
async fn assert_guard_fails(kv: &mut Kv, guards: Vec<pb::TransactionGuard>, index: u32) {
    let marker = unique_key("tx-marker");
    let reply = run(kv, guards, vec![set(&marker, "written")])
        .await
        .unwrap();
    assert_guard_failed(&reply, index);
    assert_eq!(direct().await.exists::<i64, _>(&marker).await.unwrap(), 0);
}

/// Runs a transaction whose guards must all hold.
async fn assert_guards_hold(kv: &mut Kv, guards: Vec<pb::TransactionGuard>) {
    let marker = unique_key("tx-marker");
    let results = commit(kv, guards, vec![set(&marker, "written")]).await;
    assert_eq!(results, vec![1]);
    let written = string_of(&direct().await, &marker).await;
    assert_eq!(written, Some("written".to_owned()));
}

#[tokio::test]
async fn transaction_guards_that_hold_let_it_commit() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let string = unique_key("tx-g-string");
    let hash = unique_key("tx-g-hash");
    let missing = unique_key("tx-g-missing");
    put_string(&client, &string, "v").await;
    put_hash(&client, &hash, &[("f", "abc"), ("n", "5"), ("neg", "-7")]).await;
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
    put_string(&direct().await, &present, "v").await;
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
    put_string(&client, &string, "v").await;
    put_hash(&client, &hash, &[("f", "v")]).await;
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
    put_string(&client, &string, "v").await;
    put_hash(&client, &hash, &[("f", "v")]).await;
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
    put_hash(&client, &hash, &[("f", "v")]).await;
    put_string(&client, &string, "v").await;
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
    put_hash(
        &client,
        &hash,
        &[("n", "5"), ("text", "abc"), ("neg", "-3")],
    )
    .await;
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
    put_hash(
        &client,
        &hash,
        &[("n", "5"), ("text", "abc"), ("neg", "-3")],
    )
    .await;
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
    put_hash(&direct().await, &hash, &[("n", &big.to_string())]).await;
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
    put_string(&client, &string, "before").await;
    put_string(&client, &counter, "1").await;
    put_hash(&client, &hash, &[("n", "3")]).await;
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
    assert_guard_failed(&reply, 1);
    assert_eq!(string_of(&client, &string).await.as_deref(), Some("before"));
    assert_eq!(client.pttl::<i64, _>(&string).await.unwrap(), -1);
    assert_eq!(string_of(&client, &counter).await.as_deref(), Some("1"));
    assert_eq!(
        hash_of(&client, &hash).await,
        HashMap::from([("n".to_owned(), "3".to_owned())])
    );
}
