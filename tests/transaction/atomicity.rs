//! All or nothing on errors: a type clash (FAILED_PRECONDITION), an INCRBY overflow or a
//! non-integer counter (INVALID_ARGUMENT) in any operation leaves every key unchanged.

use std::collections::HashMap;

use fred::prelude::*;
use tonic::Code;

use crate::common::unique_key;
use crate::support::{
    assert_status, direct, hash_of, hdel, hincrby, hset, incrby, run, set, start, string_of,
};

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
