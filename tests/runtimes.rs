//! The runtime model: GATEWAY_RUNTIMES single-threaded runtimes, each with its own listener
//! and its own Redis connections (REDIS_MAX_CONNECTIONS shared out among them), all serving.

mod common;

use std::time::Duration;

use common::{
    Gateway, RedisServer, client_field, connect_channel, near_cache_client_ids,
    pubsub_clients_besides_near_cache, unique_key,
};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;

/// The Redis command connections of clients other than `admin`, as CLIENT LIST lines (the
/// gateway's one pub/sub connection, which wakes lock waiters, is counted apart by
/// [`subscriber_connections`], the near cache's pair by [`near_cache_pairs`]).
async fn gateway_connections(admin: &Client) -> Vec<String> {
    let all = all_connections(admin).await;
    let near_cache = near_cache_client_ids(&all.join("\n"));
    all.into_iter()
        .filter(|line| line.contains(" sub=0 ") && !near_cache.contains(&client_field(line, "id")))
        .collect()
}

/// The pub/sub connections of other clients, the near cache's aside.
async fn subscriber_connections(admin: &Client) -> usize {
    pubsub_clients_besides_near_cache(&all_connections(admin).await.join("\n"))
}

/// The near cache's tracking pairs of other clients.
async fn near_cache_pairs(admin: &Client) -> usize {
    near_cache_client_ids(&all_connections(admin).await.join("\n")).len() / 2
}

/// Every connection of clients other than `admin`, as CLIENT LIST lines.
async fn all_connections(admin: &Client) -> Vec<String> {
    let own: i64 = admin
        .custom(fred::cmd!("CLIENT"), vec!["ID"])
        .await
        .unwrap();
    let list: String = admin
        .custom(fred::cmd!("CLIENT"), vec!["LIST"])
        .await
        .unwrap();
    list.lines()
        .filter(|line| !line.starts_with(&format!("id={own} ")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_runtime_has_its_own_connections_and_every_runtime_serves() {
    let redis = RedisServer::start();
    let admin = redis.client().await;
    // Health is probed rarely, and the replica check of locks (an INFO a second) is off, so
    // that nothing else's commands hide which connections served the Gets below.
    let gateway = Gateway::start(
        &redis.url(),
        &[
            "--runtimes",
            "3",
            "--health-interval",
            "60s",
            "--lock-replica-acks",
            "0",
        ],
    )
    .await;
    let key = unique_key("runtimes");
    let _: () = admin.set(&key, "v", None, None, false).await.unwrap();

    // Many client connections: the kernel spreads them over the runtimes' listeners.
    for _ in 0..24 {
        let channel = connect_channel(gateway.addr, Duration::from_secs(10)).await;
        let reply = KeyValueClient::new(channel)
            .get(pb::KeyValueGetRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .expect("every runtime serves")
            .into_inner();
        assert!(reply.found);
    }
    // One connection per runtime. Under CPU load a connection attempt that outlived the
    // connect timeout may linger in Redis' list a moment after its retry connected, so the
    // count is read until it settles (a real extra connection never goes away).
    let settle_by = std::time::Instant::now() + Duration::from_secs(3);
    let connections = loop {
        let connections = gateway_connections(&admin).await;
        if connections.len() == 3 || std::time::Instant::now() > settle_by {
            break connections;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        connections.len(),
        3,
        "one Redis connection per runtime: {connections:#?}"
    );
    let served = connections
        .iter()
        .filter(|line| line.contains(" cmd=get "))
        .count();
    assert!(
        served >= 2,
        "the Gets went through one runtime only: {connections:#?}"
    );
    // One pub/sub connection and one near cache pair per process, not per runtime (they
    // connect in the background).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let subscribers = subscriber_connections(&admin).await;
        let pairs = near_cache_pairs(&admin).await;
        assert!(subscribers <= 1, "{subscribers} pub/sub connections");
        assert!(pairs <= 1, "{pairs} near cache pairs");
        if subscribers == 1 && pairs == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pub/sub connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn redis_connections_are_shared_out_among_runtimes() {
    let redis = RedisServer::start();
    let admin = redis.client().await;
    let gateway = Gateway::start(
        &redis.url(),
        &["--runtimes", "2", "--redis-max-connections", "6"],
    )
    .await;
    assert_eq!(gateway_connections(&admin).await.len(), 6);
    gateway.stop().await.expect("clean stop");
    // The pools and the pub/sub connection close with the gateway.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !all_connections(&admin).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis connections outlived the gateway"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_connect_at_once_when_redis_is_down_at_start() {
    // A port nobody listens on: every runtime waits its whole connect timeout (2 s).
    let redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let started = std::time::Instant::now();
    let gateway =
        Gateway::start_unchecked(&url, &["--runtimes", "3", "--redis-connect-timeout", "2s"]).await;
    let channel = connect_channel(gateway.addr, Duration::from_secs(20)).await;
    let status = KeyValueClient::new(channel)
        .get(pb::KeyValueGetRequest {
            key: unique_key("down"),
            ..Default::default()
        })
        .await
        .expect_err("Redis is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // One connect timeout, not one after another (that would be 4 s or more).
    assert!(
        started.elapsed() < Duration::from_millis(3800),
        "serving took {:?}",
        started.elapsed()
    );
}
