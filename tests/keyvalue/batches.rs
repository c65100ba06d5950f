//! Multi-key calls: GetMany, SetMany, Delete and Exists, and the old helper's multi-key
//! scenarios (a cached task result; checking, expiring and deleting several keys at once).

use bytes::Bytes;
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::ttl_status::State;

use crate::common::{slot_tag, unique_key};
use crate::support::{
    assert_expiring, assert_expiring_status, assert_persistent, bytes, create_hash, delete, direct,
    entry, exists, get, get_with, secs, set, set_many, set_many_entries, set_request, set_with_ttl,
    start, ttl_of,
};

// ---------------------------------------------------------------------------------------------
// GetMany / SetMany / Delete / Exists

#[tokio::test]
async fn get_many_preserves_order_and_reports_missing_keys() {
    let (_gateway, mut kv) = start().await;
    let a = unique_key("gm-a");
    let b = unique_key("gm-b");
    let missing = unique_key("gm-missing");
    let hash = unique_key("gm-hash");
    set(&mut kv, &a, "A").await;
    set(&mut kv, &b, "").await;
    create_hash(&hash).await;

    let keys = vec![b.clone(), missing, a.clone(), hash, a];
    let reply = kv
        .get_many(pb::KeyValueGetManyRequest {
            keys,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(bool, Bytes)> = reply
        .values
        .into_iter()
        .map(|value| (value.found, value.value))
        .collect();
    assert_eq!(
        got,
        vec![
            (true, Bytes::new()),
            (false, Bytes::new()),
            (true, bytes("A")),
            // A hash reads as not found.
            (false, Bytes::new()),
            (true, bytes("A")),
        ]
    );
}

#[tokio::test]
async fn set_many_writes_every_entry() {
    let (_gateway, mut kv) = start().await;
    // SetMany is atomic: on a cluster its keys must share a slot.
    let tag = slot_tag("sm");
    let (a, b) = (format!("{tag}:a"), format!("{tag}:b"));
    set_with_ttl(&mut kv, &b, "old", secs(3600)).await;
    // A key named twice takes its last value.
    let entries = vec![entry(&a, "1"), entry(&b, "2"), entry(&a, "3")];
    let reply = set_many_entries(&mut kv, entries, None, false).await;
    assert!(reply.applied);
    assert_eq!(get(&mut kv, &a).await.value, "3");
    assert_eq!(get(&mut kv, &b).await.value, "2");
    // Without ttl the keys do not expire.
    assert_persistent(&mut kv, &a).await;
    assert_persistent(&mut kv, &b).await;
}

#[tokio::test]
async fn set_many_ttl_applies_to_every_key() {
    let (_gateway, mut kv) = start().await;
    let tag = slot_tag("sm-ttl");
    let keys = [format!("{tag}:1"), format!("{tag}:2")];
    let reply = set_many(&mut kv, &keys, "v", secs(60), false).await;
    assert!(reply.applied);
    for key in &keys {
        assert_expiring(&mut kv, key, 50_000, 60_000).await;
    }
}

#[tokio::test]
async fn set_many_if_none_exist_writes_nothing_when_one_key_exists() {
    let (_gateway, mut kv) = start().await;
    let tag = slot_tag("nx");
    let (fresh, existing) = (format!("{tag}:fresh"), format!("{tag}:existing"));
    set(&mut kv, &existing, "keep").await;
    let reply = set_many(&mut kv, &[&fresh, &existing], "new", secs(60), true).await;
    assert!(!reply.applied);
    assert!(!get(&mut kv, &fresh).await.found);
    assert_eq!(get(&mut kv, &existing).await.value, "keep");
    assert_persistent(&mut kv, &existing).await;
}

#[tokio::test]
async fn set_many_if_none_exist_writes_all_when_none_exists() {
    let (_gateway, mut kv) = start().await;
    let tag = slot_tag("nx-all");
    let keys = [format!("{tag}:1"), format!("{tag}:2")];
    let entries = keys.iter().map(|key| entry(key, key)).collect();
    let reply = set_many_entries(&mut kv, entries, None, true).await;
    assert!(reply.applied);
    for key in &keys {
        assert_eq!(get(&mut kv, key).await.value, key.as_str());
    }
}

#[tokio::test]
async fn delete_counts_the_keys_that_existed() {
    let (_gateway, mut kv) = start().await;
    let a = unique_key("del-a");
    let b = unique_key("del-b");
    let hash = unique_key("del-hash");
    set(&mut kv, &a, "1").await;
    set(&mut kv, &b, "2").await;
    create_hash(&hash).await;
    let keys = vec![
        a.clone(),
        unique_key("del-missing"),
        b.clone(),
        hash.clone(),
    ];
    assert_eq!(delete(&mut kv, keys).await, 3);
    assert!(!get(&mut kv, &a).await.found);
    assert!(!get(&mut kv, &b).await.found);
    assert_eq!(direct().await.exists::<i64, _>(&hash).await.unwrap(), 0);

    assert_eq!(delete(&mut kv, vec![a]).await, 0);
}

#[tokio::test]
async fn exists_counts_duplicates_twice() {
    let (_gateway, mut kv) = start().await;
    let a = unique_key("ex-a");
    let hash = unique_key("ex-hash");
    set(&mut kv, &a, "1").await;
    create_hash(&hash).await;
    assert_eq!(exists(&mut kv, vec![a.clone()]).await, 1);
    assert_eq!(exists(&mut kv, vec![a.clone(), a.clone()]).await, 2);
    let keys = vec![a.clone(), unique_key("ex-missing"), a.clone(), hash];
    assert_eq!(exists(&mut kv, keys).await, 3);
    assert_eq!(exists(&mut kv, vec![unique_key("ex-missing")]).await, 0);
}

// ---------------------------------------------------------------------------------------------
// The old helper's scenarios

#[tokio::test]
async fn task_result_is_cached_as_json_for_an_hour() {
    let (_gateway, mut kv) = start().await;
    let key = unique_key("task-result");
    let json: &[u8] = br#"{"task_id":"7f9c2b","status":"succeeded","result":{"rows":42,"files":["a.csv","b.csv"],"ratio":0.25,"note":"caf\u00e9 \"quoted\""},"finished_at":"2024-05-01T12:00:00Z"}"#;
    let request = pb::KeyValueSetRequest {
        ttl: secs(3600),
        ..set_request(&key, json)
    };
    assert!(kv.set(request).await.unwrap().into_inner().applied);

    let got = get_with(&mut kv, &key, true, None).await;
    assert!(got.found);
    // Byte-identical, so it parses back as the very same JSON document.
    assert_eq!(got.value.as_ref(), json);
    assert_expiring_status(got.ttl, 3_590_000, 3_600_000);
}

#[tokio::test]
async fn several_keys_are_checked_expired_and_deleted_at_once() {
    let (_gateway, mut kv) = start().await;
    let tag = slot_tag("several");
    let keys: Vec<String> = (0..3).map(|i| format!("{tag}:{i}")).collect();
    let missing = format!("{tag}:missing");
    assert!(set_many(&mut kv, &keys, "v", None, false).await.applied);

    let mut all = keys.clone();
    all.push(missing.clone());
    assert_eq!(exists(&mut kv, all.clone()).await, 3);

    // Expire them all in one atomic step.
    let expired = kv
        .transaction(pb::KeyValueTransactionRequest {
            guards: vec![],
            ops: all
                .iter()
                .map(|key| pb::TransactionOperation {
                    op: Some(pb::transaction_operation::Op::Expire(
                        pb::transaction_operation::Expire {
                            key: key.clone(),
                            ttl: secs(600),
                        },
                    )),
                })
                .collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(expired.committed);
    let results: Vec<i64> = expired.results.iter().map(|r| r.value).collect();
    assert_eq!(results, vec![1, 1, 1, 0]);
    for key in &keys {
        assert_expiring(&mut kv, key, 590_000, 600_000).await;
    }
    assert_eq!(ttl_of(&mut kv, &missing).await, (State::Missing, None));

    assert_eq!(delete(&mut kv, all.clone()).await, 3);
    assert_eq!(exists(&mut kv, all).await, 0);
}
