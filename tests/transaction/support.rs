//! Helpers shared by the Transaction test modules: starting a gateway, operation and guard
//! builders, running or committing a transaction, and reading back what Redis holds.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::transaction_guard::{self as guard, Guard};
use redis_gateway::pb::transaction_operation::{self as op, Op};
use tonic::Code;
use tonic::transport::Channel;

pub use crate::common::start_with;
use crate::common::{Gateway, duration, shared_redis};

pub type Kv = KeyValueClient<Channel>;

/// A gateway with default limits over the shared Redis, and a client to it.
pub async fn start() -> (Gateway, Kv) {
    start_with(&[]).await
}

/// A direct client to the shared Redis.
pub async fn direct() -> Client {
    shared_redis().client().await
}

/// A key no other test uses, in the one Redis Cluster slot of the hash tag `{tx}`: a
/// transaction is atomic, so on a cluster all its keys must share a slot. (Refusing keys
/// across slots is tested on its own, in `bad_input`.)
pub fn unique_key(label: &str) -> String {
    format!("{{tx}}:{}", crate::common::unique_key(label))
}

/// The UTF-8 bytes of `text`.
pub fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// A protobuf TTL of `n` seconds.
pub fn secs(n: u64) -> Option<prost_types::Duration> {
    Some(duration(Duration::from_secs(n)))
}

// Operation builders.

pub fn set(key: &str, value: &str) -> pb::TransactionOperation {
    set_ttl(key, value, None)
}

pub fn set_ttl(
    key: &str,
    value: &str,
    ttl: Option<prost_types::Duration>,
) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Set(op::Set {
            key: key.into(),
            value: bytes(value),
            ttl,
        })),
    }
}

pub fn delete(key: &str) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Delete(op::Delete { key: key.into() })),
    }
}

pub fn expire(key: &str, ttl_secs: u64) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Expire(op::Expire {
            key: key.into(),
            ttl: secs(ttl_secs),
        })),
    }
}

pub fn incrby(key: &str, delta: i64) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Incrby(op::IncrBy {
            key: key.into(),
            delta,
        })),
    }
}

pub fn hset(name: &str, fields: &[(&str, &str)]) -> pb::TransactionOperation {
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

pub fn hdel(name: &str, fields: &[&str]) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Hdel(op::HDel {
            name: name.into(),
            fields: fields.iter().map(|field| (*field).to_owned()).collect(),
        })),
    }
}

pub fn hincrby(name: &str, field: &str, delta: i64) -> pb::TransactionOperation {
    pb::TransactionOperation {
        op: Some(Op::Hincrby(op::HIncrBy {
            name: name.into(),
            field: field.into(),
            delta,
        })),
    }
}

// Guard builders.

pub fn exists(key: &str) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::Exists(guard::Exists { key: key.into() })),
    }
}

pub fn absent(key: &str) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::Absent(guard::Absent { key: key.into() })),
    }
}

pub fn value_equals(key: &str, value: &str) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::ValueEquals(guard::ValueEquals {
            key: key.into(),
            value: bytes(value),
        })),
    }
}

pub fn hash_field_equals(name: &str, field: &str, value: &str) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::HashFieldEquals(guard::HashFieldEquals {
            name: name.into(),
            field: field.into(),
            value: bytes(value),
        })),
    }
}

pub fn bound(name: &str, field: &str, value: i64) -> guard::HashFieldBound {
    guard::HashFieldBound {
        name: name.into(),
        field: field.into(),
        value,
    }
}

pub fn at_least(name: &str, field: &str, value: i64) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::HashFieldAtLeast(bound(name, field, value))),
    }
}

pub fn at_most(name: &str, field: &str, value: i64) -> pb::TransactionGuard {
    pb::TransactionGuard {
        guard: Some(Guard::HashFieldAtMost(bound(name, field, value))),
    }
}

// Writing keys directly.

/// Stores string `value` at `key`, without TTL.
pub async fn put_string(client: &Client, key: &str, value: &str) {
    client
        .set::<(), _, _>(key, value, None, None, false)
        .await
        .unwrap();
}

/// Stores `fields` in hash `key`.
pub async fn put_hash(client: &Client, key: &str, fields: &[(&str, &str)]) {
    client
        .hset::<i64, _, _>(key, fields.to_vec())
        .await
        .unwrap();
}

/// Stores `value` both as string `counter` and as field `f` of hash `hash`.
pub async fn put_counter_and_field(client: &Client, counter: &str, hash: &str, value: &str) {
    put_string(client, counter, value).await;
    put_hash(client, hash, &[("f", value)]).await;
}

// Running transactions and checking what they left behind.

/// Runs a transaction; its reply or error status.
pub async fn run(
    kv: &mut Kv,
    guards: Vec<pb::TransactionGuard>,
    ops: Vec<pb::TransactionOperation>,
) -> Result<pb::KeyValueTransactionResponse, tonic::Status> {
    kv.transaction(pb::KeyValueTransactionRequest { guards, ops })
        .await
        .map(tonic::Response::into_inner)
}

/// Runs a transaction that must commit; returns its results.
pub async fn commit(
    kv: &mut Kv,
    guards: Vec<pb::TransactionGuard>,
    ops: Vec<pb::TransactionOperation>,
) -> Vec<i64> {
    let reply = run(kv, guards, ops).await.unwrap();
    assert!(reply.committed, "{reply:?}");
    assert_eq!(reply.failed_guard, None);
    reply.results.iter().map(|result| result.value).collect()
}

/// Runs a transaction without guards that must fail with `code`, naming `field`.
pub async fn assert_ops_fail(
    kv: &mut Kv,
    ops: Vec<pb::TransactionOperation>,
    code: Code,
    field: &str,
) {
    assert_status(run(kv, vec![], ops).await, code, field);
}

/// A plain Get of `key` through the KeyValue API.
pub async fn get(kv: &mut Kv, key: &str) -> pb::KeyValueGetResponse {
    let request = pb::KeyValueGetRequest {
        key: key.to_owned(),
        ..Default::default()
    };
    kv.get(request).await.unwrap().into_inner()
}

/// The string at `key`, if any.
pub async fn string_of(client: &Client, key: &str) -> Option<String> {
    client.get::<Option<String>, _>(key).await.unwrap()
}

/// Every field of hash `key`.
pub async fn hash_of(client: &Client, key: &str) -> HashMap<String, String> {
    client
        .hgetall::<HashMap<String, String>, _>(key)
        .await
        .unwrap()
}

/// Asserts that a transaction failed with `code` and a message naming `field`.
#[track_caller]
pub fn assert_status(
    result: Result<pb::KeyValueTransactionResponse, tonic::Status>,
    code: Code,
    field: &str,
) {
    let status = result.expect_err("the transaction should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(field),
        "message {:?} should name `{field}`",
        status.message()
    );
}
