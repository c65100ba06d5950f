//! redis-gateway: Redis behind a typed, secure, observable gRPC API.
//!
//! # Layout
//!
//! - [`codec`]: prost, with undecodable requests reported as INVALID_ARGUMENT.
//! - [`config`]: every setting, as flags and environment variables (clap), and their checks.
//! - [`server`]: wiring — services, health, reflection, the Redis health probe, graceful
//!   shutdown with a bounded drain. [`server::run`] is what the binary and the tests call.
//! - [`service`]: one module per gRPC service; handlers validate, call Redis, map back.
//! - [`redis`]: the fred pool and how commands run (time budget, at-most-once writes, Lua by
//!   EVALSHA), key namespaces, the Lua scripts, the embedded redis-server supervisor.
//! - [`limits`]: request bounds and input validation.
//! - [`error`]: the one error type and every gRPC status decision.
//! - [`telemetry`]: logging setup.
//! - [`pb`]: code generated from `proto/redisgateway/v1/*.proto`, and its descriptor set.

pub mod codec;
pub mod config;
pub mod error;
pub mod limits;
pub mod redis;
pub mod server;
pub mod service;
pub mod telemetry;

/// Generated protobuf and gRPC code for `redisgateway.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("redisgateway.v1");

    /// The encoded `FileDescriptorSet` of every redisgateway proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/redisgateway_descriptor.bin"));
}
