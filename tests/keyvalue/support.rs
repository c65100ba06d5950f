//! Helpers shared by the KeyValue test modules: starting a gateway over the shared Redis,
//! short request helpers, and TTL and still-serving assertions.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::ttl_status::State;
use tonic::transport::Channel;

use crate::common::{Gateway, duration, shared_redis, unique_key};

pub type Kv = KeyValueClient<Channel>;

/// A gateway with default limits over the shared Redis, and a client to it.
pub async fn start() -> (Gateway, Kv) {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let kv = gateway.kv().await;
    (gateway, kv)
}

/// A direct client to the shared Redis.
pub async fn direct() -> Client {
    shared_redis().client().await
}

pub fn secs(n: u64) -> Option<prost_types::Duration> {
    Some(duration(Duration::from_secs(n)))
}

pub fn millis(n: u64) -> Option<prost_types::Duration> {
    Some(duration(Duration::from_millis(n)))
}

pub fn as_millis(ttl: &prost_types::Duration) -> i64 {
    ttl.seconds * 1000 + i64::from(ttl.nanos) / 1_000_000
}

pub async fn set(kv: &mut Kv, key: &str, value: &str) {
    let reply = kv
        .set(pb::SetRequest {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
}

pub async fn set_with_ttl(kv: &mut Kv, key: &str, value: &str, ttl: Option<prost_types::Duration>) {
    let reply = kv
        .set(pb::SetRequest {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ttl,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.applied);
}

pub async fn get(kv: &mut Kv, key: &str) -> pb::GetResponse {
    kv.get(pb::GetRequest {
        key: key.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// The key's TTL state via GetTtl, with the TTL in milliseconds when expiring.
pub async fn ttl_of(kv: &mut Kv, key: &str) -> (State, Option<i64>) {
    let reply = kv
        .get_ttl(pb::GetTtlRequest {
            key: key.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
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

pub async fn rpush(client: &Client, key: &str, value: &str) {
    client
        .custom::<i64, _>(
            CustomCommand::new_static("RPUSH", ClusterHash::FirstKey, false),
            vec![key, value],
        )
        .await
        .unwrap();
}

pub fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}
