//! TLS and ACL credentials to Redis in every deployment mode: one server, a Cluster, and a
//! Sentinel group, each secured (TLS with the test authority, the gateway logging in as its
//! own ACL user; see `common::tls`), named by a URL or by explicit settings. Every kind of
//! connection the gateway makes must use them: the pools (KeyValue, Lock), the pub/sub
//! connection that wakes lock waiters, the key-event feed (WatchExpirations) and the near
//! cache's pair; the test checks on the servers that every connection of the gateway's user
//! came in on a TLS port. And what must fail does: an untrusted server certificate, a missing
//! client certificate where Redis requires one, a wrong password.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::RedisCluster;
use common::sentinel::{RedisSentinels, SERVICE};
use common::tls::{GATEWAY_PASSWORD, GATEWAY_USER, SENTINEL_PASSWORD, TlsFiles};
use common::{Gateway, RedisServer, client_field, unique_key, with_deadline};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_watch_expirations_response::Event;
use redis_gateway::pb::lock_client::LockClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// How long a gateway may take to notice something (an event, a connection).
const SOON: Duration = Duration::from_secs(10);

fn set(key: &str, value: &str, ttl: Option<Duration>) -> pb::KeyValueSetRequest {
    pb::KeyValueSetRequest {
        key: key.to_owned(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ttl: ttl.map(common::duration),
        ..Default::default()
    }
}

fn get(key: &str, near_cache: bool) -> pb::KeyValueGetRequest {
    pb::KeyValueGetRequest {
        key: key.to_owned(),
        near_cache,
        ..Default::default()
    }
}

/// The gateway's flags for the test authority and its ACL user.
fn secured_args() -> Vec<String> {
    let mut args = TlsFiles::shared().gateway_args();
    args.extend([
        "--redis-username".into(),
        GATEWAY_USER.into(),
        "--redis-password".into(),
        GATEWAY_PASSWORD.into(),
    ]);
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Uses every kind of connection the gateway makes: KeyValue through the pools, the near cache
/// (when `near_cache`), a lock waiter woken through pub/sub, and an expiry through the
/// key-event feed.
async fn exercise_every_connection_kind(gateway: &Gateway, near_cache: bool) {
    let mut kv = gateway.kv().await;
    let key = unique_key("tls");
    kv.set(set(&key, "v1", None)).await.expect("Set");
    let read = kv.get(get(&key, false)).await.expect("Get").into_inner();
    assert!(read.found && read.value == "v1", "{read:?}");

    if near_cache {
        let deadline = Instant::now() + SOON;
        loop {
            let read = kv.get(get(&key, true)).await.expect("Get").into_inner();
            assert_eq!(read.value, "v1");
            if read.near_cache_hit {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the near cache (its tracking pair over TLS) never served a hit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A waiter queued behind a held lock gets it when it is released.
    let mut locks = LockClient::new(gateway.channel().await);
    let name = unique_key("tls-lock");
    let first =
        common::locks::acquire(&mut locks, &name, Duration::from_secs(30), Duration::ZERO).await;
    assert!(first.acquired);
    let mut waiting_locks = locks.clone();
    let waiting_name = name.clone();
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let second = common::locks::acquire(
            &mut waiting_locks,
            &waiting_name,
            Duration::from_secs(30),
            Duration::from_secs(20),
        )
        .await;
        (second, started.elapsed())
    });
    common::locks::wait_for_waiters(&mut locks, &name, 1, SOON).await;
    assert!(common::locks::release(&mut locks, &name, &first.token).await);
    let (second, waited) = waiter.await.expect("waiter");
    assert!(second.acquired, "{second:?}");
    assert!(second.fencing_token > first.fencing_token);
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");

    // An expiry reaches a watcher.
    let prefix = unique_key("tls-watch");
    let mut events = kv
        .watch_expirations(pb::KeyValueWatchExpirationsRequest {
            pattern: format!("{prefix}*"),
            kinds: vec![pb::KeyEventKind::Expired as i32],
            resume_after: String::new(),
        })
        .await
        .expect("WatchExpirations")
        .into_inner();
    let first_event = tokio::time::timeout(SOON, events.message())
        .await
        .expect("a first message")
        .expect("no error")
        .and_then(|message| message.event);
    assert!(
        matches!(first_event, Some(Event::Subscribed(_))),
        "{first_event:?}"
    );
    let expiring = format!("{prefix}:k");
    kv.set(set(&expiring, "x", Some(Duration::from_millis(200))))
        .await
        .expect("Set with TTL");
    let event = tokio::time::timeout(SOON, events.message())
        .await
        .expect("the expiry within 10 s")
        .expect("no error")
        .and_then(|message| message.event);
    match event {
        Some(Event::Expired(expired)) => assert_eq!(expired.key, expiring),
        other => panic!("expected the expiry, got {other:?}"),
    }
}

/// Every connection of the gateway's ACL user on `servers`, as (remote address, local port);
/// asserts there are some and that each came in on one of `tls_ports`.
async fn assert_gateway_connections_use_tls(servers: &[Client], tls_ports: &HashSet<u16>) {
    let mut seen = 0;
    for server in servers {
        let list: String = server
            .custom(fred::cmd!("CLIENT"), vec!["LIST"])
            .await
            .expect("CLIENT LIST");
        for line in list.lines() {
            if client_field(line, "user") != GATEWAY_USER {
                continue;
            }
            seen += 1;
            let local = client_field(line, "laddr");
            let port: u16 = local
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .expect("laddr names a port");
            assert!(
                tls_ports.contains(&port),
                "a connection of the gateway came in on {local}, not a TLS port: {line}"
            );
        }
    }
    assert!(seen > 0, "no connection of the gateway's user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_over_tls_with_an_acl_user_serves_every_connection_kind() {
    let redis = RedisServer::start_secured(&[]);
    // The URL carries the user, the password and `rediss`; only the CA comes as a flag.
    let ca = TlsFiles::shared().ca.display().to_string();
    let gateway = Gateway::start(&redis.url(), &["--redis-tls-ca", &ca]).await;
    exercise_every_connection_kind(&gateway, true).await;
    let admin = redis.client().await;
    let tls_ports = HashSet::from([redis.tls_port.expect("secured")]);
    assert_gateway_connections_use_tls(&[admin], &tls_ports).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_where_redis_requires_one() {
    let redis = RedisServer::start_secured(&["--tls-auth-clients", "yes"]);
    let tls_port = redis.tls_port.expect("secured").to_string();
    // Explicit settings instead of a URL.
    let mut args = secured_args();
    args.extend(["--redis-host".into(), "127.0.0.1".into()]);
    args.extend(["--redis-port".into(), tls_port]);
    let without_cert = Gateway::start_unchecked("", &strs(&args)).await;
    args.extend(TlsFiles::shared().gateway_client_cert_args());
    let with_cert = Gateway::start("", &strs(&args)).await;
    exercise_every_connection_kind(&with_cert, true).await;

    // Without the certificate the handshake fails: not serving, calls fail fast.
    assert_eq!(
        without_cert.health_status("").await,
        ServingStatus::NotServing
    );
    let mut kv = without_cert.kv().await;
    let started = Instant::now();
    let err = kv
        .get(with_deadline(get("k", false), Duration::from_secs(3)))
        .await
        .expect_err("no Redis connection without a client certificate");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_authority_or_a_wrong_password_is_refused() {
    let redis = RedisServer::start_secured(&[]);
    let other_ca = TlsFiles::shared().other_ca.display().to_string();
    let untrusted = Gateway::start_unchecked(&redis.url(), &["--redis-tls-ca", &other_ca]).await;
    let ca = TlsFiles::shared().ca.display().to_string();
    let wrong_password = format!(
        "rediss://{GATEWAY_USER}:not-the-password@127.0.0.1:{}",
        redis.tls_port.expect("secured")
    );
    let refused = Gateway::start_unchecked(&wrong_password, &["--redis-tls-ca", &ca]).await;
    // Both stay NOT_SERVING and fail calls fast, while a correct gateway serves.
    let correct = Gateway::start(&redis.url(), &["--redis-tls-ca", &ca]).await;
    correct
        .kv()
        .await
        .set(set(&unique_key("ok"), "v", None))
        .await
        .expect("Set through the correct gateway");
    for gateway in [&untrusted, &refused] {
        assert_eq!(gateway.health_status("").await, ServingStatus::NotServing);
        let err = gateway
            .kv()
            .await
            .get(with_deadline(get("k", false), Duration::from_secs(3)))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_with_an_acl_user_named_by_explicit_settings() {
    let cluster = RedisCluster::start_secured();
    let nodes = cluster.tls_nodes().join(",");
    let mut args = secured_args();
    args.extend([
        "--redis-mode".into(),
        "cluster".into(),
        "--redis-nodes".into(),
        nodes,
    ]);
    let gateway = Gateway::start("", &strs(&args)).await;
    exercise_every_connection_kind(&gateway, false).await;

    // Keys in every slot range: GetMany splits per slot, Scan walks every primary.
    let mut kv = gateway.kv().await;
    let prefix = unique_key("tls-cluster");
    let keys: Vec<String> = (0..30).map(|index| format!("{prefix}:{index}")).collect();
    for key in &keys {
        kv.set(set(key, key, None)).await.expect("Set");
    }
    let many = kv
        .get_many(pb::KeyValueGetManyRequest {
            keys: keys.clone(),
            near_cache: false,
        })
        .await
        .expect("GetMany")
        .into_inner();
    let values: Vec<String> = many
        .values
        .iter()
        .map(|value| String::from_utf8_lossy(&value.value).into_owned())
        .collect();
    assert_eq!(values, keys);
    let mut pages = kv
        .scan(pb::KeyValueScanRequest {
            pattern: format!("{prefix}:*"),
            ..Default::default()
        })
        .await
        .expect("Scan")
        .into_inner();
    let mut scanned = HashSet::new();
    while let Some(page) = pages.message().await.expect("a page") {
        scanned.extend(page.keys);
    }
    assert_eq!(scanned, keys.iter().cloned().collect::<HashSet<_>>());

    let mut admins = Vec::new();
    for node in &cluster.nodes {
        admins.push(node.client().await);
    }
    let tls_ports = cluster
        .nodes
        .iter()
        .filter_map(|node| node.tls_port)
        .collect();
    assert_gateway_connections_use_tls(&admins, &tls_ports).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_group_over_tls_with_passwords_is_followed_through_a_failover() {
    let group = RedisSentinels::start_secured();
    let mut args = secured_args();
    args.extend([
        "--redis-mode".into(),
        "sentinel".into(),
        "--redis-nodes".into(),
        group.tls_nodes().join(","),
        "--redis-sentinel-service".into(),
        SERVICE.into(),
        "--redis-sentinel-password".into(),
        SENTINEL_PASSWORD.into(),
        "--redis-command-timeout".into(),
        "1s".into(),
    ]);
    let gateway = Gateway::start("", &strs(&args)).await;
    exercise_every_connection_kind(&gateway, true).await;
    let tls_ports: HashSet<u16> = group
        .servers
        .iter()
        .filter_map(|server| server.tls_port)
        .collect();
    let old_primary = group.primary_port();
    let primary = group.server(old_primary).client().await;
    assert_gateway_connections_use_tls(&[primary], &tls_ports).await;

    // The primary dies; the gateway reaches the promoted replica over TLS, as its user.
    group.server(old_primary).stop();
    let mut kv = gateway.kv().await;
    let key = unique_key("tls-failover");
    let killed = Instant::now();
    loop {
        match kv
            .set(with_deadline(
                set(&key, "after", None),
                Duration::from_secs(2),
            ))
            .await
        {
            Ok(_) => break,
            Err(status) => assert!(
                killed.elapsed() < Duration::from_secs(40),
                "not served 40 s after the primary died: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(group.primary_port(), old_primary);
    println!(
        "TLS sentinel failover: served again {:?} after the primary died",
        killed.elapsed()
    );
    let new_primary = group.server(group.primary_port()).client().await;
    assert_gateway_connections_use_tls(&[new_primary], &tls_ports).await;
    // Until the gateway reads that the promoted primary has no replica (every second), lock
    // acquisitions still wait for one and are refused, outcome known.
    let mut locks = LockClient::new(gateway.channel().await);
    let probe = unique_key("tls-probe");
    let deadline = Instant::now() + SOON;
    loop {
        match locks
            .acquire(common::locks::acquire_request(
                &probe,
                Duration::from_secs(1),
                Duration::ZERO,
            ))
            .await
        {
            Ok(reply) if reply.get_ref().acquired => break,
            Ok(reply) => panic!("a fresh lock was busy: {reply:?}"),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    Instant::now() < deadline,
                    "locks refused for 10 s: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    exercise_every_connection_kind(&gateway, true).await;
}
