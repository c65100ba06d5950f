//! Hash service behaviour against a real redis-server: the old helper's scenarios (a user
//! profile, the task-status cache with its TTL in the same step), every RPC, bad input naming
//! the field, the response limit, a large Scan, exact concurrent increments, and Transaction
//! guards over hashes written through this service.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, assert_status, duration, shared_redis, start_with, unique_key};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::hash_client::HashClient;
use tonic::Code;
use tonic::transport::Channel;

type Hashes = HashClient<Channel>;

async fn start() -> (Gateway, Hashes) {
    let (gateway, _) = start_with(&[]).await;
    let hashes = HashClient::new(gateway.channel().await);
    (gateway, hashes)
}

async fn direct() -> Client {
    shared_redis().client().await
}

fn fields(pairs: &[(&str, &str)]) -> HashMap<String, Bytes> {
    pairs
        .iter()
        .map(|(field, value)| {
            (
                (*field).to_owned(),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}

fn set_request(name: &str, pairs: &[(&str, &str)]) -> pb::HashSetRequest {
    pb::HashSetRequest {
        name: name.to_owned(),
        fields: fields(pairs),
        ttl: None,
    }
}

fn get_request(name: &str, field: &str) -> pb::HashGetRequest {
    pb::HashGetRequest {
        name: name.to_owned(),
        field: field.to_owned(),
    }
}

fn increment_request(name: &str, field: &str, delta: i64) -> pb::HashIncrementRequest {
    pb::HashIncrementRequest {
        name: name.to_owned(),
        field: field.to_owned(),
        delta,
    }
}

async fn get_all(hashes: &mut Hashes, name: &str) -> HashMap<String, Bytes> {
    let request = pb::HashGetAllRequest {
        name: name.to_owned(),
    };
    hashes.get_all(request).await.unwrap().into_inner().fields
}

#[tokio::test]
async fn a_user_profile_is_written_read_and_counted() {
    let (_gateway, mut hashes) = start().await;
    let profile = unique_key("user:profile");
    let reply = hashes
        .set(set_request(
            &profile,
            &[
                ("name", "Ada"),
                ("email", "ada@example.com"),
                ("plan", "pro"),
                ("login_count", "0"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().added, 4);
    let email = hashes
        .get(get_request(&profile, "email"))
        .await
        .unwrap()
        .into_inner();
    assert!(email.found);
    assert_eq!(email.value, "ada@example.com");
    let missing = hashes
        .get(get_request(&profile, "phone"))
        .await
        .unwrap()
        .into_inner();
    assert!(!missing.found);
    let all = get_all(&mut hashes, &profile).await;
    assert_eq!(
        all,
        fields(&[
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("plan", "pro"),
            ("login_count", "0"),
        ])
    );
    let logins = hashes
        .increment(increment_request(&profile, "login_count", 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logins.value, 1);
    // Overwriting a field adds nothing new.
    let reply = hashes
        .set(set_request(
            &profile,
            &[("plan", "team"), ("city", "London")],
        ))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().added, 1);
    let len = hashes
        .len(pb::HashLenRequest {
            name: profile.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(len.len, 5);
}

#[tokio::test]
async fn a_task_status_is_cached_with_its_ttl_in_the_same_step() {
    let (_gateway, mut hashes) = start().await;
    let task = unique_key("task:status");
    let mut request = set_request(
        &task,
        &[
            ("status", "running"),
            ("progress", "40"),
            ("updated_at", "1764110000"),
        ],
    );
    request.ttl = Some(duration(Duration::from_secs(24 * 3600)));
    hashes.set(request).await.unwrap();
    // The TTL is there as soon as the fields are: one script wrote both.
    let pttl: i64 = direct().await.pttl(&task).await.unwrap();
    assert!(
        (24 * 3600 * 1000 - 60_000..=24 * 3600 * 1000).contains(&pttl),
        "pttl {pttl}"
    );
    // A later Set without a TTL keeps the hash's TTL.
    hashes
        .set(set_request(&task, &[("progress", "90")]))
        .await
        .unwrap();
    let pttl: i64 = direct().await.pttl(&task).await.unwrap();
    assert!(pttl > 24 * 3600 * 1000 - 60_000, "pttl {pttl}");
    let progress = hashes
        .get(get_request(&task, "progress"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(progress.value, "90");
}

#[tokio::test]
async fn single_field_rpcs_behave_as_documented() {
    let (_gateway, mut hashes) = start().await;
    let name = unique_key("hash:rpcs");
    let set_if_absent = |value: &str| pb::HashSetIfAbsentRequest {
        name: name.clone(),
        field: "owner".into(),
        value: Bytes::copy_from_slice(value.as_bytes()),
    };
    assert!(
        hashes
            .set_if_absent(set_if_absent("a"))
            .await
            .unwrap()
            .into_inner()
            .applied
    );
    assert!(
        !hashes
            .set_if_absent(set_if_absent("b"))
            .await
            .unwrap()
            .into_inner()
            .applied
    );
    assert_eq!(
        hashes
            .get(get_request(&name, "owner"))
            .await
            .unwrap()
            .into_inner()
            .value,
        "a"
    );
    let exists = |field: &str| pb::HashExistsRequest {
        name: name.clone(),
        field: field.to_owned(),
    };
    assert!(
        hashes
            .exists(exists("owner"))
            .await
            .unwrap()
            .into_inner()
            .exists
    );
    assert!(
        !hashes
            .exists(exists("other"))
            .await
            .unwrap()
            .into_inner()
            .exists
    );

    hashes
        .set(set_request(&name, &[("x", "1"), ("y", "2")]))
        .await
        .unwrap();
    let many = hashes
        .get_many(pb::HashGetManyRequest {
            name: name.clone(),
            fields: vec!["y".into(), "nope".into(), "x".into(), "y".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let read: Vec<Option<&[u8]>> = many
        .values
        .iter()
        .map(|value| value.found.then_some(value.value.as_ref()))
        .collect();
    assert_eq!(read, vec![Some(&b"2"[..]), None, Some(b"1"), Some(b"2")]);

    let float = hashes
        .increment_float(pb::HashIncrementFloatRequest {
            name: name.clone(),
            field: "score".into(),
            delta: 2.5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(float.value, 2.5);

    let deleted = hashes
        .delete(pb::HashDeleteRequest {
            name: name.clone(),
            fields: vec!["x".into(), "y".into(), "nope".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 2);
    // Deleting the last fields removes the hash.
    hashes
        .delete(pb::HashDeleteRequest {
            name: name.clone(),
            fields: vec!["owner".into(), "score".into()],
        })
        .await
        .unwrap();
    assert_eq!(direct().await.exists::<i64, _>(&name).await.unwrap(), 0);
    assert!(get_all(&mut hashes, &name).await.is_empty());
}

#[tokio::test]
async fn counters_overflow_and_wrong_types_are_failed_preconditions() {
    let (_gateway, mut hashes) = start().await;
    let name = unique_key("hash:counters");
    hashes
        .set(set_request(
            &name,
            &[("max", &i64::MAX.to_string()), ("text", "abc")],
        ))
        .await
        .unwrap();
    assert_status(
        hashes.increment(increment_request(&name, "max", 1)).await,
        Code::FailedPrecondition,
        "delta",
    );
    assert_status(
        hashes.increment(increment_request(&name, "text", 1)).await,
        Code::FailedPrecondition,
        "field",
    );
    let stored: String = direct().await.hget(&name, "max").await.unwrap();
    assert_eq!(stored, i64::MAX.to_string(), "nothing was changed");

    let list = unique_key("hash:list");
    let _: i64 = direct()
        .await
        .custom(fred::cmd!("RPUSH"), vec![list.as_str(), "x"])
        .await
        .unwrap();
    let status = hashes.get(get_request(&list, "f")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("holds a list") && status.message().contains("hash"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let (gateway, _) = start_with(&[
        "--max-key-bytes",
        "64",
        "--max-value-bytes",
        "16",
        "--max-response-bytes",
        "64",
        "--max-batch-items",
        "3",
    ])
    .await;
    let mut hashes = HashClient::new(gateway.channel().await);
    let name = unique_key("hash:bad");
    let long = "k".repeat(65);
    for bad_name in ["", long.as_str(), "__gw:session:{x}:y"] {
        assert_status(
            hashes.get(get_request(bad_name, "f")).await,
            Code::InvalidArgument,
            "name",
        );
        assert_status(
            hashes.set(set_request(bad_name, &[("f", "v")])).await,
            Code::InvalidArgument,
            "name",
        );
    }
    assert_status(
        hashes.set(set_request(&name, &[])).await,
        Code::InvalidArgument,
        "fields",
    );
    assert_status(
        hashes
            .set(set_request(
                &name,
                &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
            ))
            .await,
        Code::InvalidArgument,
        "fields",
    );
    assert_status(
        hashes.set(set_request(&name, &[("", "v")])).await,
        Code::InvalidArgument,
        "fields",
    );
    assert_status(
        hashes
            .set(set_request(&name, &[("f", "seventeen bytes!!")]))
            .await,
        Code::InvalidArgument,
        "fields[f]",
    );
    let mut negative = set_request(&name, &[("f", "v")]);
    negative.ttl = Some(prost_types::Duration {
        seconds: -1,
        nanos: 0,
    });
    assert_status(hashes.set(negative).await, Code::InvalidArgument, "ttl");
    let mut too_long = set_request(&name, &[("f", "v")]);
    too_long.ttl = Some(duration(Duration::from_secs(400 * 24 * 3600)));
    assert_status(hashes.set(too_long).await, Code::InvalidArgument, "ttl");
    assert_status(
        hashes.get(get_request(&name, "")).await,
        Code::InvalidArgument,
        "field",
    );
    for delta in [f64::NAN, f64::INFINITY] {
        let request = pb::HashIncrementFloatRequest {
            name: name.clone(),
            field: "f".into(),
            delta,
        };
        assert_status(
            hashes.increment_float(request).await,
            Code::InvalidArgument,
            "delta",
        );
    }
    assert_status(
        hashes
            .get_many(pb::HashGetManyRequest {
                name: name.clone(),
                fields: vec![],
            })
            .await,
        Code::InvalidArgument,
        "fields",
    );
    assert_status(
        hashes
            .delete(pb::HashDeleteRequest {
                name: name.clone(),
                fields: vec!["a".into(), "".into()],
            })
            .await,
        Code::InvalidArgument,
        "fields[1]",
    );
    let scan = |pattern: &str, page_size| pb::HashScanRequest {
        name: name.clone(),
        pattern: pattern.to_owned(),
        page_size,
    };
    assert_status(
        hashes.scan(scan("[abc", 0)).await,
        Code::InvalidArgument,
        "pattern",
    );
    assert_status(
        hashes.scan(scan("*", 4)).await,
        Code::InvalidArgument,
        "page_size",
    );
    // Nothing was written by any of the refused calls, and the server still serves.
    assert_eq!(direct().await.exists::<i64, _>(&name).await.unwrap(), 0);
    hashes.set(set_request(&name, &[("f", "v")])).await.unwrap();
}

#[tokio::test]
async fn get_all_of_a_hash_over_the_response_limit_points_to_scan() {
    let (gateway, _) =
        start_with(&["--max-value-bytes", "4KiB", "--max-response-bytes", "16KiB"]).await;
    let mut hashes = HashClient::new(gateway.channel().await);
    let name = unique_key("hash:big");
    // Another client filled it past what one reply may carry.
    let client = direct().await;
    for index in 0..5 {
        let _: () = client
            .hset(&name, (format!("f{index}"), vec![b'x'; 4000]))
            .await
            .unwrap();
    }
    let status = hashes
        .get_all(pb::HashGetAllRequest { name: name.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("Hash.Scan"),
        "{}",
        status.message()
    );
    // Scan reads it all, in pages that each stay under the limit (even at the default page
    // size of 100 fields).
    let mut stream = hashes
        .scan(pb::HashScanRequest {
            name: name.clone(),
            pattern: String::new(),
            page_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = HashSet::new();
    let mut pages = 0;
    while let Some(page) = stream.message().await.unwrap() {
        let bytes: usize = page.fields.iter().map(|(f, v)| f.len() + v.len()).sum();
        assert!(bytes <= 16 * 1024, "a page of {bytes} bytes");
        pages += 1;
        seen.extend(page.fields.into_keys());
    }
    assert_eq!(seen.len(), 5);
    assert!(pages >= 2, "{pages} pages");

    // One value larger than the whole limit cannot be streamed: the stream says so.
    let _: () = client
        .hset(&name, ("huge", vec![b'x'; 20_000]))
        .await
        .unwrap();
    let mut stream = hashes
        .scan(pb::HashScanRequest {
            name,
            pattern: "huge".into(),
            page_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without saying the value is too large"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn scan_pages_through_ten_thousand_fields_with_a_pattern() {
    let (_gateway, mut hashes) = start().await;
    let name = unique_key("hash:scan");
    let client = direct().await;
    // 10,000 fields: 2,000 match `order:*`.
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(10_000);
    for index in 0..10_000 {
        let field = if index % 5 == 0 {
            format!("order:{index}")
        } else {
            format!("item:{index}")
        };
        pairs.push((field, index.to_string()));
    }
    for chunk in pairs.chunks(1000) {
        let _: () = client.hset(&name, chunk.to_vec()).await.unwrap();
    }
    let mut stream = hashes
        .scan(pb::HashScanRequest {
            name: name.clone(),
            pattern: "order:*".into(),
            page_size: 250,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = HashMap::new();
    while let Some(page) = stream.message().await.unwrap() {
        assert!(page.fields.len() <= 250, "page of {}", page.fields.len());
        seen.extend(page.fields);
    }
    assert_eq!(seen.len(), 2000);
    assert!(seen.keys().all(|field| field.starts_with("order:")));
    assert_eq!(seen["order:4995"], "4995");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_sum_exactly() {
    let (gateway, _) = start_with(&[]).await;
    let name = unique_key("hash:concurrent");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut hashes = HashClient::new(gateway.channel().await);
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                hashes
                    .increment(increment_request(&name, "hits", 1))
                    .await
                    .expect("increment");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total: i64 = direct().await.hget(&name, "hits").await.unwrap();
    assert_eq!(total, 3200);
}

#[tokio::test]
async fn transaction_guards_and_ops_work_on_hashes_written_here() {
    let (gateway, mut kv) = start_with(&[]).await;
    let mut hashes = HashClient::new(gateway.channel().await);
    let account = unique_key("hash:account");
    hashes
        .set(set_request(
            &account,
            &[("balance", "100"), ("owner", "ada")],
        ))
        .await
        .unwrap();
    let guard = pb::TransactionGuard {
        guard: Some(pb::transaction_guard::Guard::HashFieldAtLeast(
            pb::transaction_guard::HashFieldBound {
                name: account.clone(),
                field: "balance".into(),
                value: 30,
            },
        )),
    };
    let withdraw = pb::TransactionOperation {
        op: Some(pb::transaction_operation::Op::Hincrby(
            pb::transaction_operation::HIncrBy {
                name: account.clone(),
                field: "balance".into(),
                delta: -30,
            },
        )),
    };
    let reply = kv
        .transaction(pb::KeyValueTransactionRequest {
            guards: vec![guard],
            ops: vec![withdraw],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.committed);
    let balance = hashes
        .get(get_request(&account, "balance"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.value, "70");
}
