//! Bad input: INVALID_ARGUMENT naming the offending guard or operation field, nothing
//! written, and the gateway keeps serving.

use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::transaction_operation::{self as op, Op};
use tonic::Code;

use crate::common::{Gateway, shared_redis, unique_key};
use crate::support::{
    absent, assert_status, at_least, commit, direct, exists, hdel, hincrby, hset, run, set,
};

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
