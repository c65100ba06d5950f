//! The gateway's reserved key space (`__gw:`): KeyValue and Transaction callers cannot name,
//! read, write, delete or scan the keys that hold locks, fence counters and sessions.

use fred::prelude::*;
use redis_gateway::pb;
use tonic::Code;

use crate::common::unique_key;
use crate::support::{
    Kv, assert_status, direct, get_request, scan_request, set, set_request, start,
};

/// A key inside the reserved space, written straight to Redis as a session would be.
async fn plant_internal_key() -> String {
    let key = format!("__gw:session:{{0123456789abcdef}}:{}", unique_key("secret"));
    let client = direct().await;
    let _: () = client
        .set(&key, "bearer-secret", None, None, false)
        .await
        .unwrap();
    key
}

#[tokio::test]
async fn reserved_keys_cannot_be_read_written_or_deleted() {
    let (_gateway, mut kv) = start().await;
    let key = plant_internal_key().await;
    assert_status(
        kv.get(get_request(&key)).await,
        Code::InvalidArgument,
        "key",
    );
    assert_status(
        kv.set(set_request(&key, "forged")).await,
        Code::InvalidArgument,
        "key",
    );
    assert_status(
        kv.delete(pb::KeyValueDeleteRequest {
            keys: vec![unique_key("user"), key.clone()],
        })
        .await,
        Code::InvalidArgument,
        "keys[1]",
    );
    assert_status(
        kv.get_many(pb::KeyValueGetManyRequest {
            keys: vec![key.clone()],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "keys[0]",
    );
    let stored: String = direct().await.get(&key).await.unwrap();
    assert_eq!(stored, "bearer-secret", "the internal key is untouched");
}

#[tokio::test]
async fn transactions_cannot_name_reserved_keys() {
    let (_gateway, mut kv) = start().await;
    let key = plant_internal_key().await;
    let request = pb::KeyValueTransactionRequest {
        guards: vec![],
        ops: vec![pb::TransactionOperation {
            op: Some(pb::transaction_operation::Op::Delete(
                pb::transaction_operation::Delete { key: key.clone() },
            )),
        }],
    };
    assert_status(
        kv.transaction(request).await,
        Code::InvalidArgument,
        "ops[0].delete.key",
    );
    let guarded = pb::KeyValueTransactionRequest {
        guards: vec![pb::TransactionGuard {
            guard: Some(pb::transaction_guard::Guard::ValueEquals(
                pb::transaction_guard::ValueEquals {
                    key: key.clone(),
                    value: "bearer-secret".into(),
                },
            )),
        }],
        ops: vec![pb::TransactionOperation {
            op: Some(pb::transaction_operation::Op::Set(
                pb::transaction_operation::Set {
                    key: unique_key("probe"),
                    value: "x".into(),
                    ttl: None,
                },
            )),
        }],
    };
    assert_status(
        kv.transaction(guarded).await,
        Code::InvalidArgument,
        "guards[0].value_equals.key",
    );
}

/// Every key a Scan of `pattern` streams.
async fn scan_all(kv: &mut Kv, pattern: &str) -> Vec<String> {
    let mut stream = kv
        .scan(scan_request(pattern, 0, ""))
        .await
        .unwrap()
        .into_inner();
    let mut keys = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        keys.extend(page.keys);
    }
    keys
}

#[tokio::test]
async fn scans_never_show_reserved_keys_and_refuse_reserved_patterns() {
    let (_gateway, mut kv) = start().await;
    let internal = plant_internal_key().await;
    let visible = unique_key("visible");
    set(&mut kv, &visible, "v").await;
    let keys = scan_all(&mut kv, "*").await;
    assert!(keys.contains(&visible), "the user key is listed");
    assert!(
        keys.iter().all(|key| !key.starts_with("__gw:")),
        "internal keys leaked: {:?}",
        keys.iter()
            .filter(|key| key.starts_with("__gw:"))
            .collect::<Vec<_>>()
    );
    assert!(!scan_all(&mut kv, "__*").await.contains(&internal));
    assert_status(
        kv.scan(scan_request("__gw:*", 0, "")).await,
        Code::InvalidArgument,
        "pattern",
    );
}
