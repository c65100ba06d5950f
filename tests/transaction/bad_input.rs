//! Bad input: INVALID_ARGUMENT naming the offending guard or operation field, nothing
//! written, and the gateway keeps serving.

use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::transaction_operation::{self as op, Op};
use tonic::Code;

use crate::common::{shared_redis, unique_key};
use crate::support::{
    Kv, absent, assert_status, at_least, commit, direct, exists, get, hdel, hincrby, hset, run,
    set, start_with,
};

/// Runs a transaction that must fail with INVALID_ARGUMENT naming `field`.
async fn assert_invalid(
    kv: &mut Kv,
    guards: Vec<pb::TransactionGuard>,
    ops: Vec<pb::TransactionOperation>,
    field: &str,
) {
    assert_status(run(kv, guards, ops).await, Code::InvalidArgument, field);
}

#[tokio::test]
async fn transaction_bad_input_is_invalid_argument_naming_the_field() {
    let (_gateway, mut kv) = start_with(&["--max-batch-items", "3", "--max-key-bytes", "16"]).await;
    let key = unique_key("txb");
    let empty_guard = pb::TransactionGuard { guard: None };
    let empty_op = pb::TransactionOperation { op: None };

    assert_invalid(
        &mut kv,
        vec![empty_guard],
        vec![set(&key, "x")],
        "guards[0]",
    )
    .await;
    assert_invalid(&mut kv, vec![], vec![set(&key, "x"), empty_op], "ops[1]").await;
    assert_invalid(&mut kv, vec![], vec![], "ops").await;
    assert_invalid(
        &mut kv,
        vec![absent(&key), absent(&key)],
        vec![set(&key, "x"), set(&key, "y")],
        "guards",
    )
    .await;
    assert_invalid(&mut kv, vec![], vec![set("", "x")], "ops[0].set.key").await;
    assert_invalid(
        &mut kv,
        vec![exists(&"k".repeat(17))],
        vec![set(&key, "x")],
        "guards[0].exists.key",
    )
    .await;
    assert_invalid(
        &mut kv,
        vec![],
        vec![pb::TransactionOperation {
            op: Some(Op::Expire(op::Expire {
                key: key.clone(),
                ttl: None,
            })),
        }],
        "ops[0].expire.ttl",
    )
    .await;
    assert_invalid(&mut kv, vec![], vec![hset(&key, &[])], "ops[0].hset.fields").await;
    assert_invalid(&mut kv, vec![], vec![hdel(&key, &[])], "ops[0].hdel.fields").await;
    assert_invalid(
        &mut kv,
        vec![],
        vec![hincrby(&key, "", 1)],
        "ops[0].hincrby.field",
    )
    .await;
    assert_invalid(
        &mut kv,
        vec![at_least(&key, "", 1)],
        vec![set(&key, "x")],
        "guards[0].hash_field_at_least.field",
    )
    .await;
    assert_eq!(direct().await.exists::<i64, _>(&key).await.unwrap(), 0);

    // The gateway keeps serving.
    let results = commit(&mut kv, vec![absent(&key)], vec![set(&key, "ok")]).await;
    assert_eq!(results, vec![1]);
    let got = get(&mut kv, &key).await;
    assert!(got.found);
    assert_eq!(got.value, "ok");
}

#[tokio::test]
async fn keys_in_different_cluster_slots_are_refused_with_hash_tag_advice() {
    let (_gateway, mut kv) = start_with(&[]).await;
    // Hash tags `a` and `b`: two different slots.
    let (a, b) = (
        format!("{{a}}:{}", unique_key("txs")),
        format!("{{b}}:{}", unique_key("txs")),
    );
    assert_ne!(
        fred::util::redis_keyslot(a.as_bytes()),
        fred::util::redis_keyslot(b.as_bytes())
    );
    let outcome = run(&mut kv, vec![], vec![set(&a, "1"), set(&b, "2")]).await;
    if shared_redis().is_cluster() {
        let status = outcome.expect_err("keys across slots cannot be one atomic step");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("ops:") && status.message().contains("hash tag"),
            "{status:?}"
        );
    } else {
        assert!(outcome.expect("a single Redis has one keyspace").committed);
    }
}
