//! KeyValue service behaviour against a real redis-server.

mod common;

use bytes::Bytes;
use common::{Gateway, shared_redis, unique_key};
use redis_gateway::pb;

#[tokio::test]
async fn set_then_get_round_trips_binary_values() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("roundtrip");
    let value = Bytes::from_static(b"\x00\xffbinary\n");
    let set = kv
        .set(pb::SetRequest {
            key: key.clone(),
            value: value.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(set.applied);
    let got = kv
        .get(pb::GetRequest {
            key,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, value);
}
