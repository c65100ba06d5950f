//! Committed transactions: a result per operation, TTLs on Set, and operations that see the
//! effects of earlier ones (including a hash emptied by HDEL).

use std::collections::HashMap;

use fred::prelude::*;
use tonic::Code;

use crate::support::unique_key;
use crate::support::{
    assert_ops_fail, commit, delete, direct, expire, hash_of, hdel, hincrby, hset, incrby,
    put_hash, put_string, secs, set, set_ttl, start, start_with, string_of,
};

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
    put_string(&client, &doomed, "x").await;
    put_string(&client, &expiring, "x").await;
    put_string(&client, &counter, "10").await;
    put_hash(&client, &hash, &[("old", "o")]).await;

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
    put_string(&client, &fresh, "not a number").await;

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
async fn transaction_sees_a_hash_emptied_by_hdel_as_gone() {
    let (_gateway, mut kv) = start().await;
    let client = direct().await;
    let name = unique_key("tx-emptied");
    put_hash(&client, &name, &[("a", "1"), ("b", "2")]).await;
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
    put_hash(&client, &name, &[("a", "1"), ("b", "2")]).await;
    let ops = vec![hdel(&name, &["a"]), incrby(&name, 5)];
    assert_ops_fail(&mut kv, ops, Code::FailedPrecondition, "ops[1]").await;
    assert_eq!(
        hash_of(&client, &name).await.len(),
        2,
        "nothing was written"
    );
}

#[tokio::test]
async fn transaction_commits_the_largest_batch_the_limit_allows() {
    let (_gateway, mut kv) = start_with(&["--max-batch-items", "3000"]).await;
    let counter = unique_key("tx-big-counter");
    let name = unique_key("tx-big-hash");
    let names: Vec<String> = (0..3000).map(|i| format!("f{i}")).collect();
    let fields: Vec<(&str, &str)> = names.iter().map(|f| (f.as_str(), "v")).collect();
    let results = commit(
        &mut kv,
        vec![],
        vec![incrby(&counter, 1), hset(&name, &fields)],
    )
    .await;
    assert_eq!(results, vec![1, 3000]);
    assert_eq!(hash_of(&direct().await, &name).await.len(), 3000);
}
