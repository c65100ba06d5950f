//! KeyValue requests the tests build over and over: a plain Set and a plain Get.

use bytes::Bytes;
use redis_gateway::pb;

/// Set `key` to `value`, no TTL, unconditionally.
pub fn set(key: &str, value: &str) -> pb::KeyValueSetRequest {
    pb::KeyValueSetRequest {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    }
}

/// Get `key`.
pub fn get(key: &str) -> pb::KeyValueGetRequest {
    pb::KeyValueGetRequest {
        key: key.to_owned(),
        ..Default::default()
    }
}
