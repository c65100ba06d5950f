//! redis-gateway: Redis behind a typed, secure, observable gRPC API.
//!
//! # Layout
//!
//! - [`auth`]: bearer tokens from the auth file, permissions per RPC and each client's
//!   namespace, checked by one tower layer before any handler runs.
//! - [`codec`]: prost, with undecodable requests reported as INVALID_ARGUMENT.
//! - [`config`]: every setting, as flags and environment variables (clap), and their checks.
//! - [`server`]: wiring — runtimes, services, health, reflection, the Redis health probe,
//!   graceful shutdown with a bounded drain. [`server::run`] is what the binary and the tests
//!   call.
//! - [`service`]: one module per gRPC service over a shared [`service::Context`]; handlers
//!   validate, make one typed Redis call, map back; [`service::Context::stream`] serves every
//!   server stream. The Lock service adds waiting (queued in Redis, woken through the
//!   process's one pub/sub subscription, [`redis::wakeups`]) and Hold's renewals. The Monitor
//!   service reports INFO per node ([`redis::info`]) and the gateway's own counters
//!   ([`service::Stats`]); one tower layer ([`service::calls`]) counts the calls in flight and,
//!   with metrics on, measures them.
//! - [`redis`]: the fred pool and how commands run (time budget, at-most-once writes, Lua by
//!   EVALSHA), typed operations per data type, key naming (namespaces, the reserved `__gw:`
//!   key space, cluster hash tags), the Lua scripts, the embedded redis-server supervisor.
//!   Nothing there knows gRPC.
//! - [`reload`]: the files read again while the gateway runs (auth file, TLS), on change or
//!   SIGHUP.
//! - [`transport`]: the gRPC port's connections — accept, TLS (certificates reloaded in
//!   place), HTTP/2, and graceful closes on drain, maximum age and idle timeout.
//! - [`metrics`]: Prometheus metrics (when `--metrics-listen` is set): every call counted and
//!   timed by method and status code (per-runtime tables summed at scrape), a view of the counters the gateway keeps anyway (streams,
//!   Redis failures, reconnects, pools), and the endpoint that serves them.
//! - [`limits`]: request and response bounds and input validation.
//! - [`error`]: the one error type and every gRPC status decision.
//! - [`telemetry`]: logging setup.
//! - [`pb`]: code generated from `proto/redisgateway/v1/*.proto`, and its descriptor set.
//!
//! # Runtime model
//!
//! The gateway runs `GATEWAY_RUNTIMES` single-threaded tokio runtimes, each on its own thread
//! with its own SO_REUSEPORT listener on the same address and its own Redis connection(s);
//! they share only [`service::Shared`] (limits, shutdown, task tracker, counters, the lock
//! waiters of the process) and the health status; the lock wake-up subscription runs on the
//! first runtime and wakes waiters on any. Every service and background task is written for this: a task runs on the
//! runtime that spawned it and uses that runtime's pool.
//!
//! Why: a gateway call costs a few microseconds of work and two socket writes (the gRPC
//! response, the Redis command). Under tokio's multi-thread scheduler a woken task runs at once,
//! so h2 and fred each write once per call: measured ≈2.7 syscalls per call, a third of the
//! CPU in the kernel's send path. A current-thread runtime runs every ready task before it
//! polls I/O again, so the responses of many calls and their Redis commands coalesce into few
//! writes, and one Redis connection keeps fred's auto-pipeline full (8 round-robin connections
//! kept each queue near empty). Measured with `scripts/bench.sh` on a 2-core machine shared
//! with Redis and the load generator, KeyValue.Get at 8 connections × 8 streams: the
//! multi-thread build 33.8k req/s at 34 µs CPU per call; one current-thread runtime with one
//! connection 64–67k req/s at 15 µs; two runtimes 47–57k (the second core is busy with Redis
//! and h2load). So the default is one runtime per two cores, one connection each; more
//! runtimes pay off where the gateway has cores to itself.

pub mod auth;
pub mod codec;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod redis;
pub mod reload;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod transport;

/// Generated protobuf and gRPC code for `redisgateway.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("redisgateway.v1");

    /// The encoded `FileDescriptorSet` of every redisgateway proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/redisgateway_descriptor.bin"));
}
