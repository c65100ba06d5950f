//! Responses are bounded as well as requests: a reply whose values exceed
//! GATEWAY_MAX_RESPONSE_BYTES is RESOURCE_EXHAUSTED, naming what to do instead, and the
//! gateway keeps serving.

use fred::prelude::*;
use redis_gateway::pb;
use tonic::Code;

use crate::common::unique_key;
use crate::support::{assert_code, assert_still_serves, direct, get_request, start_with};

#[tokio::test]
async fn get_many_over_the_response_limit_is_resource_exhausted() {
    let (_gateway, mut kv) =
        start_with(&["--max-value-bytes", "4KiB", "--max-response-bytes", "16KiB"]).await;
    // Another client stored values the gateway's own write limit would refuse.
    let client = direct().await;
    let keys: Vec<String> = (0..5).map(|_| unique_key("big")).collect();
    for key in &keys {
        let _: () = client
            .set(key, vec![b'x'; 5000], None, None, false)
            .await
            .unwrap();
    }
    // Three values (15,000 bytes) fit; five (25,000) do not.
    let fits = kv
        .get_many(pb::KeyValueGetManyRequest {
            keys: keys[..3].to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(fits.values.iter().all(|value| value.value.len() == 5000));
    let status = assert_code(
        kv.get_many(pb::KeyValueGetManyRequest {
            keys: keys.clone(),
            ..Default::default()
        })
        .await,
        Code::ResourceExhausted,
    );
    assert!(
        status.message().contains("GATEWAY_MAX_RESPONSE_BYTES")
            && status.message().contains("fewer keys"),
        "{}",
        status.message()
    );
    assert_still_serves(&mut kv).await;
}

#[tokio::test]
async fn a_single_value_over_the_response_limit_is_resource_exhausted() {
    let (_gateway, mut kv) =
        start_with(&["--max-value-bytes", "4KiB", "--max-response-bytes", "8KiB"]).await;
    let key = unique_key("huge");
    let _: () = direct()
        .await
        .set(&key, vec![b'x'; 9000], None, None, false)
        .await
        .unwrap();
    assert_code(kv.get(get_request(&key)).await, Code::ResourceExhausted);
    assert_still_serves(&mut kv).await;
}
