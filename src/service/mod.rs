//! gRPC services, one file each. Handlers stay thin: validate the request, map it to Redis
//! through [`crate::redis`], map the reply back. Status decisions live in [`crate::error`].

pub mod kv;

use tonic::metadata::MetadataMap;

use crate::redis::call::parse_grpc_timeout;
use crate::redis::{Call, Namespace};

/// The per-call context of a request: its gRPC deadline and the caller's namespace.
pub fn call_context(metadata: &MetadataMap, command_timeout: std::time::Duration) -> Call {
    let grpc_timeout = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout);
    Call::new(grpc_timeout, command_timeout, Namespace::default())
}
