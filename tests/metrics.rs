//! The Prometheus endpoint (`--metrics-listen`) against a real redis-server, scraped over
//! HTTP: calls counted by service, method and status code (a status in the trailers and a
//! trailers-only error alike) and timed, across runtimes; server streams counted when they end
//! (a cancelled one as CANCELLED) and shown open meanwhile; Redis failures by kind, reconnects
//! and pool state through a Redis restart; the endpoint set by its environment variable and
//! logged, and absent when unset.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{Log, logged_addr, spawn_gateway, start_gateway_process};
use common::{Gateway, RedisServer, assert_code, duration, http_get, shared_redis, unique_key};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::lock_client::LockClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const KEYVALUE: &str = "redisgateway.v1.KeyValue";

/// The value of the sample `name{labels}` in a Prometheus text exposition, if present (the
/// sample's labels must be exactly `labels`, in any order).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: HashSet<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let found: HashSet<String> = series_labels
                .split(',')
                .filter(|label| !label.is_empty())
                .map(str::to_owned)
                .collect();
            (series_name == name && found == wanted).then(|| value.parse().ok())?
        })
}

/// The count of calls of `KeyValue.<method>` that ended with `code`.
fn handled(text: &str, method: &str, code: &str) -> Option<f64> {
    sample(
        text,
        "grpc_server_handled_total",
        &[
            ("grpc_service", KEYVALUE),
            ("grpc_method", method),
            ("grpc_code", code),
        ],
    )
}

/// Scrapes until `check` holds for the exposition, failing after `within`; returns it.
async fn scrape_until(gateway: &Gateway, within: Duration, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, text) = gateway.scrape().await;
        assert!(status.contains("200"), "{status}");
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not reached within {within:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn get_request(key: &str) -> pb::KeyValueGetRequest {
    pb::KeyValueGetRequest {
        key: key.to_owned(),
        ..Default::default()
    }
}

/// Three Gets that succeed and one refused as INVALID_ARGUMENT, over connections that the
/// kernel spreads over two runtimes: the counts are exact for that method and code (one
/// registry for the process), and the method's histogram counted every call.
#[tokio::test]
async fn calls_are_counted_by_method_and_status_code_across_runtimes() {
    let gateway = Gateway::start(
        &shared_redis().url(),
        &["--metrics-listen", "127.0.0.1:0", "--runtimes", "2"],
    )
    .await;
    let (status, before) = gateway.scrape().await;
    assert!(status.contains("200 OK"), "{status}");
    assert_eq!(handled(&before, "Get", "OK"), None, "nothing recorded yet");

    for _ in 0..3 {
        // A connection each, so that both runtimes are likely to serve some.
        let mut kv = KeyValueClient::new(gateway.channel().await);
        let reply = kv.get(get_request(&unique_key("metrics"))).await.unwrap();
        assert!(!reply.into_inner().found);
    }
    let mut kv = gateway.kv().await;
    assert_code(kv.get(get_request("")).await, Code::InvalidArgument);

    let (_, text) = gateway.scrape().await;
    assert_eq!(handled(&text, "Get", "OK"), Some(3.0), "{text}");
    assert_eq!(
        handled(&text, "Get", "INVALID_ARGUMENT"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        handled(&text, "Set", "OK"),
        None,
        "no series for methods not called"
    );
    let method = [("grpc_service", KEYVALUE), ("grpc_method", "Get")];
    let count = sample(&text, "grpc_server_handling_seconds_count", &method);
    assert!(count.is_some_and(|count| count >= 3.0), "{text}");
    let bucket = [
        ("grpc_service", KEYVALUE),
        ("grpc_method", "Get"),
        ("le", "+Inf"),
    ];
    assert_eq!(
        sample(&text, "grpc_server_handling_seconds_bucket", &bucket),
        count
    );
    let health = [
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Check"),
        ("grpc_code", "OK"),
    ];
    assert!(
        sample(&text, "grpc_server_handled_total", &health).is_some_and(|count| count >= 1.0),
        "the fixture's health checks are calls too:\n{text}"
    );
    assert_eq!(
        sample(&text, "gateway_redis_pool_configured_connections", &[]),
        Some(2.0),
        "one connection per runtime:\n{text}"
    );
    assert_eq!(
        sample(&text, "gateway_redis_pool_connected_connections", &[]),
        Some(2.0)
    );
}

/// A Scan counts when its stream ends; a Hold shows as an open stream while it runs, is not
/// counted yet, and counts as CANCELLED once the client drops it.
#[tokio::test]
async fn server_streams_count_when_they_end() {
    let gateway = Gateway::start(&shared_redis().url(), &["--metrics-listen", "127.0.0.1:0"]).await;
    let mut kv = gateway.kv().await;
    let scan = pb::KeyValueScanRequest {
        pattern: format!("{}*", unique_key("metrics-scan")),
        ..Default::default()
    };
    let mut pages = kv.scan(scan).await.unwrap().into_inner();
    while pages.message().await.unwrap().is_some() {}
    let text = scrape_until(&gateway, Duration::from_secs(5), |text| {
        handled(text, "Scan", "OK").is_some()
    })
    .await;
    assert_eq!(handled(&text, "Scan", "OK"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "gateway_server_streams_opened_total", &[]),
        Some(1.0)
    );

    let mut locks = LockClient::new(gateway.channel().await);
    let hold = pb::LockHoldRequest {
        name: unique_key("metrics-hold"),
        ttl: Some(duration(Duration::from_secs(5))),
        owner: "metrics-test".into(),
        ..Default::default()
    };
    let mut events = locks.hold(hold).await.unwrap().into_inner();
    let first = events
        .message()
        .await
        .unwrap()
        .and_then(|message| message.event);
    assert!(
        matches!(first, Some(pb::lock_hold_response::Event::Acquired(_))),
        "{first:?}"
    );
    let text = scrape_until(&gateway, Duration::from_secs(5), |text| {
        sample(text, "gateway_server_streams_open", &[]) == Some(1.0)
    })
    .await;
    let hold_labels = |code| {
        [
            ("grpc_service", "redisgateway.v1.Lock"),
            ("grpc_method", "Hold"),
            ("grpc_code", code),
        ]
    };
    for code in ["OK", "CANCELLED"] {
        assert_eq!(
            sample(&text, "grpc_server_handled_total", &hold_labels(code)),
            None,
            "an open stream is counted when it ends:\n{text}"
        );
    }

    drop(events);
    let text = scrape_until(&gateway, Duration::from_secs(5), |text| {
        sample(text, "gateway_server_streams_open", &[]) == Some(0.0)
            && sample(text, "grpc_server_handled_total", &hold_labels("CANCELLED")).is_some()
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "grpc_server_handled_total",
            &hold_labels("CANCELLED")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "grpc_server_handled_total", &hold_labels("OK")),
        None
    );
}

/// Redis stops: the pool shows no connection, a Get fails UNAVAILABLE and counts as an
/// `unavailable` command error; Redis comes back: the reconnect is counted and the pool is
/// whole again.
#[tokio::test]
async fn redis_failures_and_reconnects_are_counted() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(
        &redis.url(),
        &["--metrics-listen", "127.0.0.1:0", "--runtimes", "1"],
    )
    .await;
    let mut kv = gateway.kv().await;
    kv.get(get_request(&unique_key("metrics"))).await.unwrap();
    let (_, text) = gateway.scrape().await;
    let errors = |text: &str, kind| {
        sample(
            text,
            "gateway_redis_command_errors_total",
            &[("kind", kind)],
        )
    };
    for kind in ["unavailable", "timeout", "other"] {
        assert_eq!(errors(&text, kind), Some(0.0), "{kind}:\n{text}");
    }
    assert_eq!(
        sample(&text, "gateway_redis_reconnects_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "gateway_redis_pool_connected_connections", &[]),
        Some(1.0)
    );

    redis.stop();
    scrape_until(&gateway, Duration::from_secs(10), |text| {
        sample(text, "gateway_redis_pool_connected_connections", &[]) == Some(0.0)
    })
    .await;
    assert_code(
        kv.get(get_request(&unique_key("metrics"))).await,
        Code::Unavailable,
    );
    let (_, text) = gateway.scrape().await;
    assert_eq!(handled(&text, "Get", "UNAVAILABLE"), Some(1.0), "{text}");
    assert!(
        errors(&text, "unavailable").is_some_and(|count| count >= 1.0),
        "{text}"
    );

    redis.restart();
    gateway
        .wait_for_health(ServingStatus::Serving, Duration::from_secs(15))
        .await;
    let text = scrape_until(&gateway, Duration::from_secs(10), |text| {
        sample(text, "gateway_redis_reconnects_total", &[]).is_some_and(|count| count >= 1.0)
            && sample(text, "gateway_redis_pool_connected_connections", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(&text, "gateway_redis_pool_configured_connections", &[]),
        Some(1.0)
    );
    kv.get(get_request(&unique_key("metrics"))).await.unwrap();
}

/// The TCP ports process `pid` listens on (IPv4 and IPv6).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes = common::socket_inodes(pid);
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st ... inode (the 10th field)
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if inode
                .parse()
                .is_ok_and(|inode: u64| inodes.contains(&inode))
                && let Some((_, port)) = local.rsplit_once(':')
                && let Ok(port) = u16::from_str_radix(port, 16)
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// The binary with GATEWAY_METRICS_LISTEN set logs where it serves metrics and answers there;
/// any other path is 404.
#[tokio::test]
async fn the_environment_variable_turns_the_endpoint_on_and_the_address_is_logged() {
    let redis = shared_redis();
    let mut child = spawn_gateway(
        &["--listen", "127.0.0.1:0"],
        &[
            ("REDIS_URL", &redis.url()),
            ("GATEWAY_METRICS_LISTEN", "127.0.0.1:0"),
        ],
    );
    let mut log = Log::capture(child.stderr.take().expect("stderr is piped"));
    let line = log
        .wait_for("serving metrics", Duration::from_secs(20))
        .await;
    let addr: SocketAddr = logged_addr(&line).unwrap_or_else(|| panic!("no addr in {line:?}"));
    log.wait_for("serving gRPC", Duration::from_secs(20)).await;
    let (status, text) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        text.contains("# TYPE gateway_redis_reconnects_total counter"),
        "{text}"
    );
    assert!(sample(&text, "gateway_redis_pool_configured_connections", &[]).is_some());
    let (status, _) = http_get(addr, "/").await;
    assert!(status.contains("404"), "{status}");
    assert!(
        listening_ports(child.id().expect("running")).contains(&addr.port()),
        "the logged address is the child's own"
    );
}

/// Without the setting the gateway listens on its gRPC port only, and says nothing of metrics.
#[tokio::test]
async fn the_endpoint_is_absent_when_unset() {
    let redis = shared_redis();
    let gateway = start_gateway_process(&[], &[("REDIS_URL", &redis.url())]).await;
    let pid = gateway.child.id().expect("running");
    // Each runtime has its own socket on the gRPC port; nothing listens elsewhere.
    let ports: HashSet<u16> = listening_ports(pid).into_iter().collect();
    assert_eq!(ports, HashSet::from([gateway.addr.port()]));
    assert!(
        !gateway
            .log
            .seen()
            .iter()
            .any(|line| line.contains("metrics")),
        "{:#?}",
        gateway.log.seen()
    );
    let in_process = Gateway::start(&redis.url(), &[]).await;
    assert_eq!(in_process.metrics_addr, None);
}

/// The expiry stream's figures: watchers open now and events delivered to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_watchers_and_events_are_counted() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &["--metrics-listen", "127.0.0.1:0"]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("metrics-watch");
    let mut events = kv
        .watch_expirations(pb::KeyValueWatchExpirationsRequest {
            pattern: key.clone(),
            kinds: vec![pb::KeyEventKind::Deleted as i32],
            resume_after: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(events.message().await.unwrap().is_some(), "subscribed");
    let admin = redis.client().await;
    for _ in 0..3 {
        let _: () = admin.set(&key, "v", None, None, false).await.unwrap();
        let _: i64 = admin.del(&key).await.unwrap();
        assert!(events.message().await.unwrap().is_some(), "a deletion");
    }
    let text = scrape_until(&gateway, Duration::from_secs(5), |text| {
        sample(text, "gateway_expiry_events_delivered_total", &[]) == Some(3.0)
    })
    .await;
    assert_eq!(
        sample(&text, "gateway_expiry_watchers", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "gateway_expiry_events_dropped_total", &[]),
        Some(0.0),
        "{text}"
    );
    drop(events);
    scrape_until(&gateway, Duration::from_secs(5), |text| {
        sample(text, "gateway_expiry_watchers", &[]) == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_hits_misses_invalidations_and_size_are_exposed() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &["--metrics-listen", "127.0.0.1:0"]).await;
    scrape_until(&gateway, Duration::from_secs(10), |text| {
        sample(text, "gateway_near_cache_tracking", &[]) == Some(1.0)
    })
    .await;
    let mut kv = gateway.kv().await;
    let key = unique_key("metrics-near");
    let cached_get = || pb::KeyValueGetRequest {
        key: key.clone(),
        near_cache: true,
        ..Default::default()
    };
    for _ in 0..3 {
        kv.get(cached_get()).await.unwrap();
    }
    // A write around the gateway invalidates the key.
    let admin = redis.client().await;
    let _: () = admin.set(&key, "v", None, None, false).await.unwrap();
    let text = scrape_until(&gateway, Duration::from_secs(5), |text| {
        sample(text, "gateway_near_cache_invalidations_total", &[]) == Some(1.0)
    })
    .await;
    for (name, value) in [
        ("gateway_near_cache_hits_total", 2.0),
        ("gateway_near_cache_misses_total", 1.0),
        ("gateway_near_cache_entries", 0.0),
        ("gateway_near_cache_evictions_total", 0.0),
    ] {
        assert_eq!(sample(&text, name, &[]), Some(value), "{name}: {text}");
    }
    kv.get(cached_get()).await.unwrap();
    let text = scrape_until(&gateway, Duration::from_secs(5), |text| {
        sample(text, "gateway_near_cache_entries", &[]) == Some(1.0)
    })
    .await;
    assert!(
        sample(&text, "gateway_near_cache_bytes", &[]).is_some_and(|bytes| bytes > 0.0),
        "{text}"
    );
}
