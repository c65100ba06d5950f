//! Monitor service behaviour against real redis-server processes: every RPC, its figures
//! checked against INFO read straight from the same Redis; the hit ratio after a known number
//! of hits and misses; GetHealth SERVING, DEGRADED (memory near maxmemory, evictions) and
//! NOT_SERVING (Redis stopped) with the reason; the gateway's own counters (version, uptime,
//! pool, in-flight calls, reconnects).
//!
//! Tests that reset or reconfigure Redis, or count exactly, use a private
//! `RedisServer::start()`; the others share the binary's Redis and allow for its other tests.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    Gateway, RedisServer, assert_code, assert_status, duration, shared_redis, with_deadline,
};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::monitor_client::MonitorClient;
use redis_gateway::pb::monitor_get_health_response::{Mode, Status as HealthStatus};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

type Monitor = MonitorClient<Channel>;

async fn monitor(gateway: &Gateway) -> Monitor {
    MonitorClient::new(gateway.channel().await)
}

/// INFO `section` read straight from Redis, as field -> value.
async fn direct_info(client: &Client, section: &str) -> HashMap<String, String> {
    let text: String = client
        .custom(fred::cmd!("INFO"), vec![section])
        .await
        .expect("INFO");
    text.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(field, value)| (field.to_owned(), value.to_owned()))
        .collect()
}

fn number(info: &HashMap<String, String>, field: &str) -> u64 {
    info.get(field)
        .unwrap_or_else(|| panic!("INFO has no {field}"))
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number"))
}

/// Asserts that `actual` is within `tolerance` (a share, e.g. 0.2) of `expected`.
#[track_caller]
fn assert_near(actual: u64, expected: u64, tolerance: f64, what: &str) {
    let difference = actual.abs_diff(expected) as f64;
    assert!(
        difference <= expected as f64 * tolerance,
        "{what}: {actual} is not within {:.0}% of {expected}",
        tolerance * 100.0
    );
}

async fn health(monitor: &mut Monitor) -> pb::MonitorGetHealthResponse {
    monitor
        .get_health(pb::MonitorGetHealthRequest {})
        .await
        .expect("GetHealth always answers")
        .into_inner()
}

async fn gateway_stats(monitor: &mut Monitor) -> pb::MonitorGetGatewayStatsResponse {
    monitor
        .get_gateway_stats(pb::MonitorGetGatewayStatsRequest {})
        .await
        .expect("GetGatewayStats answers")
        .into_inner()
}

async fn stats(monitor: &mut Monitor) -> pb::MonitorGetStatsResponse {
    monitor
        .get_stats(pb::MonitorGetStatsRequest {})
        .await
        .expect("GetStats answers")
        .into_inner()
}

/// Polls `probe` until `done` holds for its value, failing after `within`.
async fn eventually<T: std::fmt::Debug, F, Fut>(
    within: Duration,
    mut probe: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "still {value:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn proto_duration_secs(value: &Option<prost_types::Duration>) -> f64 {
    let value = value.as_ref().expect("a duration");
    value.seconds as f64 + f64::from(value.nanos) / 1e9
}

#[tokio::test]
async fn ping_measures_a_round_trip() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let started = Instant::now();
    let reply = monitor
        .ping(pb::MonitorPingRequest {})
        .await
        .unwrap()
        .into_inner();
    let latency = proto_duration_secs(&reply.latency);
    assert!(latency > 0.0, "{reply:?}");
    assert!(
        latency <= started.elapsed().as_secs_f64(),
        "the round trip ({latency}s) cannot outlast the call"
    );
}

#[tokio::test]
async fn health_is_serving_with_figures_that_match_info() {
    let redis = shared_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let direct = redis.client().await;
    let reply = health(&mut monitor).await;
    let info = direct_info(&direct, "everything").await;

    assert_eq!(reply.status(), HealthStatus::Serving, "{reply:?}");
    assert!(reply.warnings.is_empty(), "{reply:?}");
    assert_eq!(reply.redis_version, info["redis_version"]);
    assert_eq!(reply.mode(), Mode::Standalone);
    // The gateway's connection and the direct one at least.
    assert!(reply.connected_clients >= 2, "{reply:?}");
    assert_near(
        reply.used_memory,
        number(&info, "used_memory"),
        0.25,
        "used_memory",
    );
    let uptime = proto_duration_secs(&reply.uptime);
    let direct_uptime = number(&info, "uptime_in_seconds") as f64;
    assert!(
        (uptime - direct_uptime).abs() <= 2.0,
        "uptime {uptime} vs {direct_uptime}"
    );
    assert!(reply.ops_per_sec >= 0.0);
    assert!((0.0..=1.0).contains(&reply.hit_ratio), "{reply:?}");
}

#[tokio::test]
async fn get_info_returns_sections_and_raw_fields_per_node() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let direct = redis.client().await;

    let info = |section: &str| pb::MonitorGetInfoRequest {
        section: section.to_owned(),
    };
    let default = monitor.get_info(info("")).await.unwrap().into_inner();
    assert_eq!(default.nodes.len(), 1, "{default:?}");
    let node = &default.nodes[0];
    assert_eq!(node.address, format!("127.0.0.1:{}", redis.port));
    for section in [
        "server",
        "clients",
        "memory",
        "stats",
        "replication",
        "keyspace",
    ] {
        assert!(
            node.sections.contains_key(section),
            "{section} missing from {:?}",
            node.sections.keys()
        );
    }
    let server = direct_info(&direct, "server").await;
    let fields = &node.sections["server"].fields;
    for field in ["redis_version", "run_id", "tcp_port", "executable"] {
        assert_eq!(fields[field], server[field], "{field}");
    }

    // One section, named in any case.
    let memory = monitor.get_info(info("Memory")).await.unwrap().into_inner();
    let sections: Vec<&String> = memory.nodes[0].sections.keys().collect();
    assert_eq!(sections, ["memory"]);
    assert!(
        memory.nodes[0].sections["memory"].fields["used_memory"]
            .parse::<u64>()
            .is_ok()
    );

    // An unknown section: the node, without sections.
    let unknown = monitor
        .get_info(info("nosuchsection"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.nodes.len(), 1);
    assert!(unknown.nodes[0].sections.is_empty(), "{unknown:?}");
}

#[tokio::test]
async fn get_info_refuses_anything_but_a_section_name() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    for section in ["memory stats", "memory\r\nFLUSHALL", "a-b", "*", "ü"] {
        let reply = monitor
            .get_info(pb::MonitorGetInfoRequest {
                section: section.to_owned(),
            })
            .await;
        assert_status(reply, Code::InvalidArgument, "section");
    }
}

#[tokio::test]
async fn memory_and_clients_match_info() {
    let redis = shared_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let direct = redis.client().await;

    let memory = monitor
        .get_memory(pb::MonitorGetMemoryRequest {})
        .await
        .unwrap()
        .into_inner();
    let info = direct_info(&direct, "memory").await;
    assert_eq!(memory.nodes.len(), 1);
    assert_near(
        memory.used_memory,
        number(&info, "used_memory"),
        0.25,
        "used_memory",
    );
    assert_near(
        memory.used_memory_rss,
        number(&info, "used_memory_rss"),
        0.25,
        "used_memory_rss",
    );
    assert!(
        memory.used_memory_peak >= memory.used_memory / 2,
        "{memory:?}"
    );
    assert_eq!(memory.max_memory, number(&info, "maxmemory"));
    assert_eq!(memory.max_memory_policy, info["maxmemory_policy"]);
    assert!(memory.fragmentation_ratio > 0.0, "{memory:?}");
    assert_eq!(memory.nodes[0].used_memory, memory.used_memory);
    assert_eq!(memory.nodes[0].max_memory_policy, memory.max_memory_policy);

    let clients = monitor
        .get_clients(pb::MonitorGetClientsRequest {})
        .await
        .unwrap()
        .into_inner();
    let info = direct_info(&direct, "clients").await;
    assert!(clients.connected_clients >= 2, "{clients:?}");
    assert_eq!(clients.max_clients, number(&info, "maxclients"));
    assert_eq!(clients.nodes.len(), 1);
    assert_eq!(
        clients.nodes[0].connected_clients,
        clients.connected_clients
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_ratio_counts_known_hits_and_misses() {
    const HITS: usize = 30;
    const MISSES: usize = 10;
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let mut kv = gateway.kv().await;
    let direct = redis.client().await;
    for index in 0..HITS {
        let () = direct
            .set(format!("present:{index}"), "v", None, None, false)
            .await
            .unwrap();
    }
    let _: String = direct
        .custom(fred::cmd!("CONFIG"), vec!["RESETSTAT"])
        .await
        .unwrap();

    let reset = stats(&mut monitor).await;
    assert_eq!(
        (reset.hits, reset.misses, reset.hit_ratio),
        (0, 0, 0.0),
        "{reset:?}"
    );

    for index in 0..HITS {
        let reply = kv
            .get(pb::KeyValueGetRequest {
                key: format!("present:{index}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.found);
    }
    for index in 0..MISSES {
        let reply = kv
            .get(pb::KeyValueGetRequest {
                key: format!("missing:{index}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!reply.found);
    }

    let expected = HITS as f64 / (HITS + MISSES) as f64;
    let counted = stats(&mut monitor).await;
    assert_eq!(counted.hits, HITS as u64, "{counted:?}");
    assert_eq!(counted.misses, MISSES as u64, "{counted:?}");
    assert!((counted.hit_ratio - expected).abs() < 1e-9, "{counted:?}");
    assert_eq!(counted.nodes.len(), 1);
    assert_eq!(counted.nodes[0].hits, HITS as u64);
    assert!((counted.nodes[0].hit_ratio - expected).abs() < 1e-9);
    let info = direct_info(&direct, "stats").await;
    assert!(counted.commands_processed >= (HITS + MISSES) as u64);
    assert!(counted.commands_processed <= number(&info, "total_commands_processed"));
    assert_eq!(counted.expired, number(&info, "expired_keys"));
    assert_eq!(counted.evicted, 0);
    assert!((health(&mut monitor).await.hit_ratio - expected).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_near_maxmemory_and_serving_again_below_it() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let direct = redis.client().await;
    let serving = health(&mut monitor).await;
    assert_eq!(serving.status(), HealthStatus::Serving, "{serving:?}");

    // Just above what Redis uses now: about 95% of the limit.
    let used = number(&direct_info(&direct, "memory").await, "used_memory");
    let limit = used + used / 20;
    let _: String = direct
        .custom(
            fred::cmd!("CONFIG"),
            vec!["SET".to_owned(), "maxmemory".to_owned(), limit.to_string()],
        )
        .await
        .unwrap();
    let degraded = health(&mut monitor).await;
    assert_eq!(degraded.status(), HealthStatus::Degraded, "{degraded:?}");
    assert!(
        degraded
            .warnings
            .iter()
            .any(|warning| warning.contains("maxmemory")),
        "{degraded:?}"
    );
    let memory = monitor
        .get_memory(pb::MonitorGetMemoryRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(memory.max_memory, limit);

    let _: String = direct
        .custom(fred::cmd!("CONFIG"), vec!["SET", "maxmemory", "0"])
        .await
        .unwrap();
    let recovered = health(&mut monitor).await;
    assert_eq!(recovered.status(), HealthStatus::Serving, "{recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_redis_evicts() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let direct = redis.client().await;
    assert_eq!(health(&mut monitor).await.status(), HealthStatus::Serving);

    let used = number(&direct_info(&direct, "memory").await, "used_memory");
    let limit = (used + 256 * 1024).to_string();
    let _: String = direct
        .custom(
            fred::cmd!("CONFIG"),
            vec![
                "SET",
                "maxmemory-policy",
                "allkeys-random",
                "maxmemory",
                limit.as_str(),
            ],
        )
        .await
        .unwrap();
    let value = "x".repeat(1024);
    for index in 0..1000 {
        let () = direct
            .set(format!("filler:{index}"), value.as_str(), None, None, false)
            .await
            .unwrap();
    }
    assert!(
        stats(&mut monitor).await.evicted > 0,
        "Redis evicted nothing"
    );

    let degraded = health(&mut monitor).await;
    assert_eq!(degraded.status(), HealthStatus::Degraded, "{degraded:?}");
    assert!(
        degraded
            .warnings
            .iter()
            .any(|warning| warning.contains("evicting")),
        "{degraded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_redis_is_down_and_reconnects_are_counted() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let before = gateway_stats(&mut monitor).await;
    assert_eq!(before.reconnects, 0, "{before:?}");
    assert_eq!(before.pool_connected, before.pool_size, "{before:?}");

    redis.stop();
    gateway
        .wait_for_health(ServingStatus::NotServing, Duration::from_secs(10))
        .await;
    let down = monitor
        .get_health(with_deadline(
            pb::MonitorGetHealthRequest {},
            Duration::from_secs(5),
        ))
        .await
        .expect("GetHealth answers while Redis is down")
        .into_inner();
    assert_eq!(down.status(), HealthStatus::NotServing, "{down:?}");
    assert!(
        down.warnings
            .iter()
            .any(|warning| warning.contains("unreachable")),
        "{down:?}"
    );
    assert_code(
        monitor.ping(pb::MonitorPingRequest {}).await,
        Code::Unavailable,
    );
    assert_code(
        monitor.get_stats(pb::MonitorGetStatsRequest {}).await,
        Code::Unavailable,
    );
    // The gateway's own figures need no Redis.
    let stats_while_down = gateway_stats(&mut monitor).await;
    assert_eq!(stats_while_down.pool_connected, 0, "{stats_while_down:?}");

    redis.restart();
    gateway
        .wait_for_health(ServingStatus::Serving, Duration::from_secs(15))
        .await;
    assert_eq!(health(&mut monitor).await.status(), HealthStatus::Serving);
    let after = eventually(
        Duration::from_secs(5),
        || {
            let mut monitor = monitor.clone();
            async move { gateway_stats(&mut monitor).await }
        },
        |stats| stats.pool_connected == stats.pool_size,
    )
    .await;
    assert!(after.reconnects >= 1, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_shows_keys_and_expires_per_database() {
    let redis = RedisServer::start();
    // The gateway works in database 2; the direct client in 0.
    let gateway = Gateway::start(&format!("{}/2", redis.url()), &[]).await;
    let mut monitor = monitor(&gateway).await;
    let mut kv = gateway.kv().await;
    let direct = redis.client().await;

    let empty = monitor
        .get_keyspace(pb::MonitorGetKeyspaceRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(empty.databases.is_empty(), "{empty:?}");

    for index in 0..5 {
        let ttl = (index < 2).then(|| duration(Duration::from_secs(3600)));
        kv.set(pb::KeyValueSetRequest {
            key: format!("k{index}"),
            value: Bytes::from_static(b"v"),
            ttl,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let () = direct.set("zero", "v", None, None, false).await.unwrap();

    let keyspace = monitor
        .get_keyspace(pb::MonitorGetKeyspaceRequest {})
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<(u32, u64, u64)> = keyspace
        .databases
        .iter()
        .map(|database| (database.db, database.keys, database.expires))
        .collect();
    assert_eq!(counts, [(0, 1, 0), (2, 5, 2)], "{keyspace:?}");
    assert_eq!(keyspace.nodes.len(), 1);
    assert_eq!(keyspace.nodes[0].databases, keyspace.databases);
    assert_eq!(keyspace.databases[0].avg_ttl, None, "no key with a TTL");
    if let Some(avg_ttl) = &keyspace.databases[1].avg_ttl {
        assert!(avg_ttl.seconds <= 3600, "{avg_ttl:?}");
    }
    let info = direct_info(&direct, "keyspace").await;
    assert!(info["db2"].starts_with("keys=5,expires=2,"), "{info:?}");
}

#[tokio::test]
async fn gateway_stats_report_version_uptime_pool_and_calls_in_flight() {
    let gateway = Gateway::start(
        &shared_redis().url(),
        &["--runtimes", "2", "--redis-max-connections", "4"],
    )
    .await;
    let mut monitor = monitor(&gateway).await;
    let first = gateway_stats(&mut monitor).await;
    assert_eq!(first.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(first.pool_size, 4, "{first:?}");
    assert_eq!(first.pool_connected, 4, "{first:?}");
    assert_eq!(first.reconnects, 0, "{first:?}");
    assert_eq!(
        (
            first.expiry_subscribers,
            first.events_delivered,
            first.events_dropped
        ),
        (0, 0, 0)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = gateway_stats(&mut monitor).await;
    assert!(
        proto_duration_secs(&second.uptime) >= proto_duration_secs(&first.uptime) + 0.1,
        "{first:?} then {second:?}"
    );

    // An open stream is a call in flight until it ends.
    let mut health = gateway.health().await;
    let watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let watching = eventually(
        Duration::from_secs(5),
        || {
            let mut monitor = monitor.clone();
            async move { gateway_stats(&mut monitor).await }
        },
        |stats| stats.in_flight_calls >= 1,
    )
    .await;
    assert!(watching.in_flight_calls >= 1);
    drop(watch);

    // Unary calls end too; this GetGatewayStats itself is not counted.
    for _ in 0..5 {
        monitor.ping(pb::MonitorPingRequest {}).await.unwrap();
    }
    eventually(
        Duration::from_secs(5),
        || {
            let mut monitor = monitor.clone();
            async move { gateway_stats(&mut monitor).await }
        },
        |stats| stats.in_flight_calls == 0,
    )
    .await;
}
