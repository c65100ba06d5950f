//! Helpers shared by the KeyValue test modules: starting a gateway over the shared Redis,
//! request builders, short request helpers, and status, TTL and still-serving assertions.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::key_value_compare_and_swap_request::Expectation;
use redis_gateway::pb::ttl_status::State;
use tonic::transport::Channel;

use crate::common::{Gateway, duration, shared_redis, unique_key};
pub use crate::common::{assert_code, assert_status, start_with};

pub type Kv = KeyValueClient<Channel>;

/// A gateway with default limits over the shared Redis, and a client to it.
pub async fn start() -> (Gateway, Kv) {
    start_with(&[]).await
}

/// A direct client to the shared Redis.
pub async fn direct() -> Client {
    shared_redis().client().await
}

/// A protobuf TTL of `n` seconds.
pub fn secs(n: u64) -> Option<prost_types::Duration> {
    Some(duration(Duration::from_secs(n)))
}

/// A protobuf TTL of `n` milliseconds.
pub fn millis(n: u64) -> Option<prost_types::Duration> {
    Some(duration(Duration::from_millis(n)))
}

/// A protobuf Duration in whole milliseconds.
pub fn as_millis(ttl: &prost_types::Duration) -> i64 {
    ttl.seconds * 1000 + i64::from(ttl.nanos) / 1_000_000
}

/// The UTF-8 bytes of `text`.
pub fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

// Request builders: the named fields set, everything else default.

/// A KeyValueGetRequest for `key`.
pub fn get_request(key: &str) -> pb::KeyValueGetRequest {
    pb::KeyValueGetRequest {
        key: key.to_owned(),
        ..Default::default()
    }
}

/// A KeyValueSetRequest of `value` at `key`.
pub fn set_request(key: &str, value: impl AsRef<[u8]>) -> pb::KeyValueSetRequest {
    pb::KeyValueSetRequest {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value.as_ref()),
        ..Default::default()
    }
}

/// One SetMany entry.
pub fn entry(key: &str, value: impl AsRef<[u8]>) -> pb::KeyValueEntry {
    pb::KeyValueEntry {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value.as_ref()),
    }
}

/// A KeyValueSetManyRequest of `entries` with the given TTL and if_none_exist.
pub fn set_many_request(
    entries: Vec<pb::KeyValueEntry>,
    ttl: Option<prost_types::Duration>,
    if_none_exist: bool,
) -> pb::KeyValueSetManyRequest {
    pb::KeyValueSetManyRequest {
        entries,
        ttl,
        if_none_exist,
    }
}

/// An KeyValueExpireRequest (condition ALWAYS) for `key`.
pub fn expire_request(key: &str, ttl: Option<prost_types::Duration>) -> pb::KeyValueExpireRequest {
    pb::KeyValueExpireRequest {
        key: key.to_owned(),
        ttl,
        ..Default::default()
    }
}

/// An KeyValueIncrementRequest of `key` by `delta`.
pub fn increment_request(
    key: &str,
    delta: i64,
    ttl: Option<prost_types::Duration>,
) -> pb::KeyValueIncrementRequest {
    pb::KeyValueIncrementRequest {
        key: key.to_owned(),
        delta,
        ttl,
    }
}

/// A KeyValueCompareAndSwapRequest without TTL or keep_ttl.
pub fn cas_request(
    key: &str,
    expectation: Expectation,
    value: impl AsRef<[u8]>,
) -> pb::KeyValueCompareAndSwapRequest {
    pb::KeyValueCompareAndSwapRequest {
        key: key.to_owned(),
        expectation: Some(expectation),
        value: Bytes::copy_from_slice(value.as_ref()),
        ttl: None,
        keep_ttl: false,
    }
}

/// A KeyValueScanRequest for keys matching `pattern` of type `key_type` ("" for any).
pub fn scan_request(pattern: &str, page_size: u32, key_type: &str) -> pb::KeyValueScanRequest {
    pb::KeyValueScanRequest {
        pattern: pattern.to_owned(),
        page_size,
        r#type: key_type.to_owned(),
    }
}

// Calls that must succeed.

/// Sets `key` to `value` without TTL; asserts it was applied.
pub async fn set(kv: &mut Kv, key: &str, value: &str) {
    set_with_ttl(kv, key, value, None).await;
}

/// Sets `key` to `value` with `ttl`; asserts it was applied.
pub async fn set_with_ttl(kv: &mut Kv, key: &str, value: &str, ttl: Option<prost_types::Duration>) {
    let request = pb::KeyValueSetRequest {
        ttl,
        ..set_request(key, value)
    };
    let reply = kv.set(request).await.unwrap().into_inner();
    assert!(reply.applied);
}

/// A plain Get of `key`.
pub async fn get(kv: &mut Kv, key: &str) -> pb::KeyValueGetResponse {
    get_with(kv, key, false, None).await
}

/// A Get of `key` with include_ttl and refresh_ttl.
pub async fn get_with(
    kv: &mut Kv,
    key: &str,
    include_ttl: bool,
    refresh_ttl: Option<prost_types::Duration>,
) -> pb::KeyValueGetResponse {
    let request = pb::KeyValueGetRequest {
        key: key.to_owned(),
        include_ttl,
        refresh_ttl,
        near_cache: false,
    };
    kv.get(request).await.unwrap().into_inner()
}

/// A SetMany of `entries`.
pub async fn set_many_entries(
    kv: &mut Kv,
    entries: Vec<pb::KeyValueEntry>,
    ttl: Option<prost_types::Duration>,
    if_none_exist: bool,
) -> pb::KeyValueSetManyResponse {
    let request = set_many_request(entries, ttl, if_none_exist);
    kv.set_many(request).await.unwrap().into_inner()
}

/// A SetMany of the same `value` at every one of `keys`.
pub async fn set_many(
    kv: &mut Kv,
    keys: &[impl AsRef<str>],
    value: &str,
    ttl: Option<prost_types::Duration>,
    if_none_exist: bool,
) -> pb::KeyValueSetManyResponse {
    let entries = keys.iter().map(|key| entry(key.as_ref(), value)).collect();
    set_many_entries(kv, entries, ttl, if_none_exist).await
}

/// Delete of `keys`; how many were deleted.
pub async fn delete(kv: &mut Kv, keys: Vec<String>) -> i64 {
    let request = pb::KeyValueDeleteRequest { keys };
    kv.delete(request).await.unwrap().into_inner().deleted
}

/// Exists of `keys`; how many exist.
pub async fn exists(kv: &mut Kv, keys: Vec<String>) -> i64 {
    let request = pb::KeyValueExistsRequest { keys };
    kv.exists(request).await.unwrap().into_inner().count
}

// Status assertions.

// TTL assertions.

/// The key's TTL state via GetTtl, with the TTL in milliseconds when expiring.
pub async fn ttl_of(kv: &mut Kv, key: &str) -> (State, Option<i64>) {
    let request = pb::KeyValueGetTtlRequest {
        key: key.to_owned(),
    };
    let reply = kv.get_ttl(request).await.unwrap().into_inner();
    (reply.state(), reply.ttl.as_ref().map(as_millis))
}

/// Asserts that the key is EXPIRING with a TTL in `(low, high]` milliseconds.
pub async fn assert_expiring(kv: &mut Kv, key: &str, low: i64, high: i64) {
    let (state, ttl) = ttl_of(kv, key).await;
    assert_eq!(state, State::Expiring, "{key}");
    let ttl = ttl.expect("an expiring key reports its TTL");
    assert!(
        ttl > low && ttl <= high,
        "{key}: ttl {ttl} ms not in ({low}, {high}]"
    );
}

/// Asserts that a Get's TTL status is EXPIRING with a TTL in `(low, high]` milliseconds.
#[track_caller]
pub fn assert_expiring_status(status: Option<pb::TtlStatus>, low: i64, high: i64) {
    let status = status.unwrap();
    assert_eq!(status.state(), State::Expiring);
    let ttl = as_millis(status.ttl.as_ref().unwrap());
    assert!(ttl > low && ttl <= high, "ttl {ttl}");
}

/// Asserts that the key exists and has no TTL.
pub async fn assert_persistent(kv: &mut Kv, key: &str) {
    assert_eq!(ttl_of(kv, key).await, (State::Persistent, None), "{key}");
}

/// Polls (bounded) until Get reports the key gone.
pub async fn wait_until_gone(kv: &mut Kv, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if !get(kv, key).await.found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} still exists after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Expiry notifications from the shared Redis (keyspace events), so that a test can tell a key
/// that expired by its TTL from one that was never written.
pub struct ExpiryWatch {
    /// A client subscribed to `__keyevent@0__:expired`.
    subscriber: Client,
    /// The keyspace events it receives.
    events: tokio::sync::broadcast::Receiver<fred::types::KeyspaceEvent>,
}

impl ExpiryWatch {
    /// Turns on expiry notifications and subscribes to them; start it before writing the keys.
    pub async fn start() -> Self {
        let subscriber = direct().await;
        let events = subscriber.keyspace_event_rx();
        // Key events are node-local: on a cluster, configure and subscribe on every primary.
        let primaries = subscriber
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default();
        let nodes: Vec<Option<Server>> = if primaries.is_empty() {
            vec![None]
        } else {
            primaries.into_iter().map(Some).collect()
        };
        for node in nodes {
            let options = Options {
                cluster_node: node,
                ..Options::default()
            };
            let _: () = subscriber
                .with_options(&options)
                .custom(
                    fred::cmd!("CONFIG"),
                    vec!["SET", "notify-keyspace-events", "Ex"],
                )
                .await
                .unwrap();
            subscriber
                .with_options(&options)
                .subscribe("__keyevent@0__:expired")
                .await
                .unwrap();
        }
        Self { subscriber, events }
    }

    /// Polls until every one of `keys` is gone (reading an expired key also deletes it), then
    /// asserts that Redis reported each of them expired; all within `within`.
    pub async fn assert_expired(mut self, kv: &mut Kv, keys: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        for key in keys {
            wait_until_gone(kv, key, deadline.saturating_duration_since(Instant::now())).await;
        }
        let mut pending: Vec<&str> = keys.to_vec();
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no expiry reported for {pending:?} within {within:?}"));
            match event {
                Ok(event) if event.operation == "expired" => {
                    pending.retain(|key| event.key.as_str() != Some(*key));
                }
                Ok(_) => {}
                Err(err) => panic!("keyspace events lost ({err}) while waiting for {pending:?}"),
            }
        }
        let _ = self.subscriber.quit().await;
    }
}

/// After bad inputs: the same gateway still serves a normal Get.
pub async fn assert_still_serves(kv: &mut Kv) {
    let key = unique_key("ok");
    direct()
        .await
        .set::<(), _, _>(&key, "fine", None, None, false)
        .await
        .unwrap();
    let got = get(kv, &key).await;
    assert!(got.found);
    assert_eq!(got.value, "fine");
}

// Keys of other types, written directly.

/// Creates hash `key` holding field `f` = `v`.
pub async fn create_hash(key: &str) {
    direct()
        .await
        .hset::<i64, _, _>(key, ("f", "v"))
        .await
        .unwrap();
}

/// Appends `value` to list `key`.
pub async fn rpush(client: &Client, key: &str, value: &str) {
    client
        .custom::<i64, _>(
            CustomCommand::new_static("RPUSH", ClusterHash::FirstKey, false),
            vec![key, value],
        )
        .await
        .unwrap();
}

/// Creates hash `hash` (field `f` = `v`) and list `list` (one item `x`).
pub async fn create_hash_and_list(hash: &str, list: &str) {
    create_hash(hash).await;
    rpush(&direct().await, list, "x").await;
}
