//! Prometheus metrics, served on their own port when `--metrics-listen` /
//! GATEWAY_METRICS_LISTEN is set (and neither recorded nor served when it is not).
//!
//! - [`calls`]: what every gRPC call records (by method and status code), in one table of
//!   atomics per runtime, summed when scraped; [`crate::service::calls`] is the tower layer
//!   that feeds it.
//! - [`endpoint`]: `GET /metrics` over HTTP/1.1 (hyper, which tonic already brings), a tracked
//!   task that ends on shutdown.
//! - This file: the [`Metrics`] registry (`prometheus-client`, one per process) and the
//!   scrape-time view of the counters that the gateway keeps anyway ([`crate::service::Stats`], [`crate::redis::RedisStats`]).
//!
//! # Metrics
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `grpc_server_handled_total` | counter | `grpc_service`, `grpc_method`, `grpc_code` | calls finished, by status code |
//! | `grpc_server_handling_seconds` | histogram | `grpc_service`, `grpc_method` | time from request to the call's status |
//! | `gateway_server_streams_open` | gauge | | server streams open now |
//! | `gateway_server_streams_opened_total` | counter | | server streams opened since start |
//! | `gateway_connections_open` | gauge | | client connections open now (TLS handshakes included) |
//! | `gateway_connections_accepted_total` | counter | | client connections accepted since start |
//! | `gateway_connections_closed_total` | counter | `reason` (`client`, `idle`, `max_age`, `drain`, `tls_handshake`) | client connections ended, by who ended them and why |
//! | `gateway_redis_command_errors_total` | counter | `kind` (`unavailable`, `timeout`, `other`) | failed Redis commands |
//! | `gateway_redis_reconnects_total` | counter | | pooled connections re-established |
//! | `gateway_redis_pool_configured_connections` | gauge | | connections of every runtime's pool |
//! | `gateway_redis_pool_connected_connections` | gauge | | of those, connected now |
//! | `gateway_expiry_watchers` | gauge | | WatchExpirations streams open |
//! | `gateway_expiry_events_delivered_total` | counter | | key events delivered to them |
//! | `gateway_expiry_events_dropped_total` | counter | | key events skipped for laggards |
//! | `gateway_near_cache_tracking` | gauge | | 1 while the near cache's tracking connection is up |
//! | `gateway_near_cache_entries`, `gateway_near_cache_bytes` | gauge | | the near cache's size now |
//! | `gateway_near_cache_hits_total`, `gateway_near_cache_misses_total` | counter | | reads answered from it, and sent to Redis |
//! | `gateway_near_cache_invalidations_total`, `gateway_near_cache_flushes_total`, `gateway_near_cache_evictions_total` | counter | | keys invalidated, whole-cache drops, evictions |
//!
//! A call counts once, when it ends: a unary call when its status is sent, a server stream
//! when it closes (Lock.Hold may run for hours before it shows; `gateway_server_streams_open`
//! shows it meanwhile). See [`crate::service::calls`] for where the status is read.
//!
//! Only what is recorded is registered. Counters the gateway keeps anyway
//! ([`crate::service::Stats`], [`crate::redis::RedisStats`]) are read at scrape time by
//! [`GatewayCollector`].

pub mod calls;
pub mod endpoint;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::redis::stats::CommandErrorKind;
use crate::service::Shared;
use crate::transport::Closed;
pub use calls::CallTable;
use calls::CallTables;

/// Upper bounds of the latency buckets, in seconds: a Get through the gateway takes about
/// 0.1–1 ms under load, a waiting Lock.Acquire up to its wait timeout.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process's metrics: one registry for every runtime.
pub struct Metrics {
    /// What a scrape encodes.
    registry: Registry,
    /// Every runtime's table of call counters, read by the registry's [`CallCollector`].
    calls: Arc<CallTables>,
}

impl Metrics {
    /// The registry, with the call metrics and a view of `shared`'s counters.
    pub fn new(shared: Arc<Shared>) -> Self {
        let calls = Arc::new(CallTables::new());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(CallCollector {
            calls: calls.clone(),
        }));
        registry.register_collector(Box::new(GatewayCollector { shared }));
        Self { registry, calls }
    }

    /// A table for one runtime's calls to be recorded into (by [`crate::service::calls`]);
    /// every scrape sums all of them.
    pub fn add_runtime(&self) -> Arc<CallTable> {
        self.calls.add_runtime()
    }

    /// Every metric in the Prometheus text format (0.0.4).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `grpc_server_handled_total` and `grpc_server_handling_seconds`, summed over the runtimes.
struct CallCollector {
    calls: Arc<CallTables>,
}

impl fmt::Debug for CallCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallCollector")
    }
}

impl Collector for CallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.calls.encode(&mut encoder)
    }
}

/// The counters the gateway keeps whether or not metrics are on, read at scrape time.
#[derive(Debug)]
struct GatewayCollector {
    /// Streams, Redis counters and pools.
    shared: Arc<Shared>,
}

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = &self.shared.stats;
        encode_gauges(
            &mut encoder,
            &[(
                "gateway_server_streams_open",
                "Server streams open now (Scan, Lock.Hold, ...).",
                stats.open_streams.load(Ordering::Relaxed),
            )],
        )?;
        encode_counters(
            &mut encoder,
            &[(
                "gateway_server_streams_opened",
                "Server streams opened since start.",
                stats.streams_opened.load(Ordering::Relaxed),
            )],
        )?;

        let connections = &stats.connections;
        encode_gauges(
            &mut encoder,
            &[(
                "gateway_connections_open",
                "Client connections open now (TLS handshakes included).",
                connections.open(),
            )],
        )?;
        encode_counters(
            &mut encoder,
            &[(
                "gateway_connections_accepted",
                "Client connections accepted since start.",
                connections.accepted(),
            )],
        )?;
        {
            let mut closed = encoder.encode_descriptor(
                "gateway_connections_closed",
                "Client connections ended: by the client (or a failure), or by the gateway when \
             idle, at their maximum age, while draining, or in a failed TLS handshake.",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for why in Closed::ALL {
                let labels = [("reason", why.label())];
                ConstCounter::new(connections.closed(why))
                    .encode(closed.encode_family(&labels)?)?;
            }
        }

        let redis = &self.shared.redis_stats;
        let mut errors = encoder.encode_descriptor(
            "gateway_redis_command_errors",
            "Redis commands that failed: unavailable (no connection, refused), timeout, other \
             (an error reply).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for kind in CommandErrorKind::ALL {
            let labels = [("kind", kind.label())];
            ConstCounter::new(redis.command_errors(kind)).encode(errors.encode_family(&labels)?)?;
        }
        encode_counters(
            &mut encoder,
            &[(
                "gateway_redis_reconnects",
                "Pooled Redis connections re-established after a failure.",
                redis.reconnects(),
            )],
        )?;
        let pools = redis.pool_connections();
        encode_gauges(
            &mut encoder,
            &[
                (
                    "gateway_redis_pool_configured_connections",
                    "Redis connections of every runtime's pool (REDIS_MAX_CONNECTIONS shared out).",
                    pools.configured as u64,
                ),
                (
                    "gateway_redis_pool_connected_connections",
                    "Pooled Redis connections connected now.",
                    pools.connected as u64,
                ),
            ],
        )?;

        encode_gauges(
            &mut encoder,
            &[(
                "gateway_expiry_watchers",
                "KeyValue.WatchExpirations streams open now.",
                stats.expiry_subscribers.load(Ordering::Relaxed),
            )],
        )?;
        encode_counters(
            &mut encoder,
            &[
                (
                    "gateway_expiry_events_delivered",
                    "Key events delivered to WatchExpirations streams.",
                    stats.events_delivered.load(Ordering::Relaxed),
                ),
                (
                    "gateway_expiry_events_dropped",
                    "Key events skipped for WatchExpirations streams that fell behind (each told by \
                     a gap).",
                    stats.events_dropped.load(Ordering::Relaxed),
                ),
            ],
        )?;

        let cache = self.shared.near_cache.snapshot();
        encode_gauges(
            &mut encoder,
            &[
                (
                    "gateway_near_cache_tracking",
                    "1 while the near cache's tracking connection is up (reads may use the cache).",
                    u64::from(cache.tracking),
                ),
                (
                    "gateway_near_cache_entries",
                    "Entries in the near cache now.",
                    cache.entries,
                ),
                (
                    "gateway_near_cache_bytes",
                    "Bytes charged for the near cache's entries now.",
                    cache.bytes,
                ),
            ],
        )?;
        encode_counters(
            &mut encoder,
            &[
                (
                    "gateway_near_cache_hits",
                    "KeyValue reads answered from the near cache.",
                    cache.hits,
                ),
                (
                    "gateway_near_cache_misses",
                    "KeyValue reads that asked for the near cache and went to Redis.",
                    cache.misses,
                ),
                (
                    "gateway_near_cache_invalidations",
                    "Keys Redis invalidated in the near cache.",
                    cache.invalidations,
                ),
                (
                    "gateway_near_cache_flushes",
                    "Times the whole near cache was dropped (tracking connection lost or renewed, \
                     database flushed).",
                    cache.flushes,
                ),
                (
                    "gateway_near_cache_evictions",
                    "Near cache entries evicted to stay within its bounds.",
                    cache.evictions,
                ),
            ],
        )?;
        Ok(())
    }
}

/// Encodes gauges given as (name, help, value).
fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    gauges: &[(&str, &str, u64)],
) -> Result<(), fmt::Error> {
    for &(name, help, value) in gauges {
        let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    Ok(())
}

/// Encodes counters given as (name, help, value).
fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: &[(&str, &str, u64)],
) -> Result<(), fmt::Error> {
    for &(name, help, value) in counters {
        let counter = ConstCounter::new(value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    Ok(())
}
