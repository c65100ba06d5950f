//! All or nothing on errors: a type clash (FAILED_PRECONDITION), an INCRBY overflow or a
//! non-integer counter (INVALID_ARGUMENT) in any operation leaves every key unchanged.

use std::collections::HashMap;

use fred::prelude::*;
use tonic::Code;

use crate::support::unique_key;
use crate::support::{
    assert_ops_fail, direct, hash_of, hdel, hincrby, hset, incrby, put_counter_and_field, put_hash,
    put_string, set, start, string_of,
};

#[tokio::test]
async fn transaction_type_clash_is_failed_precondition_and_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let string = unique_key("tx-tc-string");
    let hash = unique_key("tx-tc-hash");
    let written = unique_key("tx-tc-written");
    let counter = unique_key("tx-tc-counter");
    put_string(&client, &string, "text").await;
    put_string(&client, &counter, "1").await;
    put_hash(&client, &hash, &[("f", "1")]).await;
    let clash = Code::FailedPrecondition;

    // incrby on a hash, after writes to other keys.
    let ops = vec![
        set(&written, "x"),
        incrby(&counter, 1),
        hincrby(&hash, "f", 1),
        incrby(&hash, 1),
    ];
    assert_ops_fail(&mut kv, ops, clash, "ops[3]").await;

    // hset on a string.
    let ops = vec![
        set(&written, "x"),
        incrby(&counter, 1),
        hset(&string, &[("f", "v")]),
    ];
    assert_ops_fail(&mut kv, ops, clash, "ops[2]").await;

    // hdel / hincrby on a string, and on a string set earlier in the same transaction.
    let ops = vec![incrby(&counter, 1), hdel(&string, &["f"])];
    assert_ops_fail(&mut kv, ops, clash, "ops[1]").await;
    let ops = vec![set(&written, "x"), hincrby(&written, "f", 1)];
    assert_ops_fail(&mut kv, ops, clash, "ops[1]").await;
    // incrby on a key turned into a hash earlier in the same transaction.
    let ops = vec![hset(&written, &[("f", "1")]), incrby(&written, 1)];
    assert_ops_fail(&mut kv, ops, clash, "ops[1]").await;

    assert_eq!(client.exists::<i64, _>(&written).await.unwrap(), 0);
    assert_eq!(string_of(&client, &counter).await.as_deref(), Some("1"));
    assert_eq!(string_of(&client, &string).await.as_deref(), Some("text"));
    assert_eq!(
        hash_of(&client, &hash).await,
        HashMap::from([("f".to_owned(), "1".to_owned())])
    );
}

#[tokio::test]
async fn transaction_incrby_overflow_in_a_later_op_is_a_failed_precondition_and_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let written = unique_key("tx-of-written");
    let max = unique_key("tx-of-max");
    let min = unique_key("tx-of-min");
    let hash = unique_key("tx-of-hash");
    put_string(&client, &max, &i64::MAX.to_string()).await;
    put_string(&client, &min, &i64::MIN.to_string()).await;
    put_hash(&client, &hash, &[("f", &i64::MAX.to_string())]).await;
    let refused = Code::FailedPrecondition;

    let ops = vec![set(&written, "x"), incrby(&max, -1), incrby(&max, 2)];
    assert_ops_fail(&mut kv, ops, refused, "ops[2].incrby.delta").await;

    let ops = vec![set(&written, "x"), incrby(&min, -1)];
    assert_ops_fail(&mut kv, ops, refused, "ops[1].incrby.delta").await;

    let ops = vec![set(&written, "x"), hincrby(&hash, "f", 1)];
    assert_ops_fail(&mut kv, ops, refused, "ops[1].hincrby.delta").await;

    // Two increments that overflow only together.
    let ops = vec![
        set(&written, "0"),
        incrby(&written, i64::MAX),
        incrby(&written, 1),
    ];
    assert_ops_fail(&mut kv, ops, refused, "ops[2].incrby.delta").await;

    let fresh = unique_key("tx-of-fresh");
    let ops = vec![incrby(&fresh, i64::MAX), incrby(&fresh, 1)];
    assert_ops_fail(&mut kv, ops, refused, "ops[1].incrby.delta").await;

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
async fn transaction_incrby_of_non_integer_is_a_failed_precondition_and_changes_nothing() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let written = unique_key("tx-ni-written");
    let hash = unique_key("tx-ni-hash");
    let refused = Code::FailedPrecondition;
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
        put_counter_and_field(&client, &counter, &hash, stored).await;
        let ops = vec![set(&written, "x"), incrby(&counter, 1)];
        assert_ops_fail(&mut kv, ops, refused, "ops[1].incrby").await;
        let ops = vec![set(&written, "x"), hincrby(&hash, "f", 1)];
        assert_ops_fail(&mut kv, ops, refused, "ops[1].hincrby").await;
        assert_eq!(
            client.exists::<i64, _>(&written).await.unwrap(),
            0,
            "a transaction failing on {stored:?} wrote its first op"
        );
        assert_eq!(string_of(&client, &counter).await.as_deref(), Some(stored));
        let field = client.hget::<Option<String>, _, _>(&hash, "f").await;
        assert_eq!(field.unwrap().as_deref(), Some(stored));
    }
    // A value set earlier in the same transaction is checked too.
    let ops = vec![set(&written, "007"), incrby(&written, 1)];
    assert_ops_fail(&mut kv, ops, refused, "ops[1].incrby").await;
    assert_eq!(client.exists::<i64, _>(&written).await.unwrap(), 0);
}
