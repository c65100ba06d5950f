//! Redis' refusals, as real servers give them, become the documented status codes: a missing
//! ACL permission is PERMISSION_DENIED, a write to a read-only replica is UNAVAILABLE with a
//! known outcome, and a Redis older than 7.0 is refused at start, naming its version.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Gateway, RedisServer, unique_key};
use fred::prelude::*;
use redis_gateway::pb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::Code;

fn set(key: &str) -> pb::KeyValueSetRequest {
    pb::KeyValueSetRequest {
        key: key.to_owned(),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_command_the_acl_denies_is_permission_denied() {
    let redis = RedisServer::start();
    let admin = redis.client().await;
    let user = unique_key("acl").replace(':', "-");
    // May read and ping, may not write strings.
    let _: () = admin
        .custom(
            fred::cmd!("ACL"),
            vec!["SETUSER", &user, "on", ">pw", "~*", "&*", "+@all", "-set"],
        )
        .await
        .unwrap();
    let url = format!("redis://{user}:pw@127.0.0.1:{}", redis.port);
    let gateway = Gateway::start(&url, &[]).await;
    let mut kv = gateway.kv().await;
    let status = kv.set(set(&unique_key("denied"))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = kv
        .get(pb::KeyValueGetRequest {
            key: unique_key("allowed"),
            ..Default::default()
        })
        .await;
    assert!(status.is_ok(), "reads still work: {status:?}");
}

#[tokio::test]
async fn a_write_to_a_read_only_replica_is_unavailable_with_a_known_outcome() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    let replica_admin = replica.client().await;
    let port = primary.port.to_string();
    let _: () = replica_admin
        .custom(fred::cmd!("REPLICAOF"), vec!["127.0.0.1", port.as_str()])
        .await
        .unwrap();
    let gateway = Gateway::start(&replica.url(), &[]).await;
    let mut kv = gateway.kv().await;
    // An INCR is at most once: were READONLY read as a failed connection, the status would
    // say it may have been applied.
    let status = kv
        .increment(pb::KeyValueIncrementRequest {
            key: unique_key("replica"),
            delta: 1,
            ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("read-only replica"), "{status:?}");
    assert!(!status.message().contains("may or may not"), "{status:?}");
}

/// A stand-in for Redis 6.2 speaking just enough RESP: INFO reports the old version, PING
/// answers PONG, anything else OK. Returns its port.
async fn fake_old_redis() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                // Each command is an array: `*N`, then `$len` and the word, N times.
                while let Ok(Some(line)) = lines.next_line().await {
                    let Some(count) = line.strip_prefix('*') else {
                        continue;
                    };
                    let count: usize = count.parse().unwrap_or(0);
                    let mut words = Vec::new();
                    for _ in 0..count {
                        let _ = lines.next_line().await;
                        words.push(lines.next_line().await.ok().flatten().unwrap_or_default());
                    }
                    let reply = match words.first().map(|word| word.to_ascii_uppercase()) {
                        Some(command) if command == "INFO" => {
                            let info = "# Server\r\nredis_version:6.2.14\r\n";
                            format!("${}\r\n{info}\r\n", info.len())
                        }
                        Some(command) if command == "PING" => "+PONG\r\n".to_owned(),
                        _ => "+OK\r\n".to_owned(),
                    };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_redis_older_than_7_is_refused_naming_its_version() {
    let port = fake_old_redis().await;
    let gateway = Gateway::start_unchecked(&format!("redis://127.0.0.1:{port}"), &[]).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), gateway.stopped())
        .await
        .expect("the gateway stops by itself");
    let err = outcome.expect_err("the gateway refuses an old Redis");
    assert_eq!(err.exit_code(), 2);
    let message = err.to_string();
    assert!(
        message.contains("6.2.14") && message.contains("7.0"),
        "{message}"
    );
}
