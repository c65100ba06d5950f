//! Signals to the gateway process: the first SIGTERM drains in-flight calls (see
//! lifecycle.rs); a second SIGTERM or SIGINT exits at once, without waiting for the drain.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{RedisServer, unique_key};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts the gateway binary on 127.0.0.1:0 over `redis_url`; returns it and the address it
/// logged.
async fn start_gateway(redis_url: &str) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-gateway"))
        .args(["--listen", "127.0.0.1:0", "--redis-url", redis_url])
        .args(["--drain-timeout", "60s", "--redis-command-timeout", "60s"])
        .env("RUST_LOG", "info")
        .env("GATEWAY_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the gateway binary");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("addr=").nth(1)
                && line.contains("serving gRPC")
            {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("the gateway exited before serving");
    })
    .await
    .expect("the gateway serves");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// True when a connection to Redis on `port` holds bytes Redis has not read (from
/// /proc/net/tcp: local port `port`, established, rx_queue > 0).
fn redis_has_unread_input(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = fields
            .get(1)
            .and_then(|local| local.split(':').nth(1))
            .and_then(|hex| u16::from_str_radix(hex, 16).ok());
        let established = fields.get(3) == Some(&"01");
        let unread = fields
            .get(4)
            .and_then(|queues| queues.split(':').nth(1))
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .unwrap_or(0);
        local_port == Some(port) && established && unread > 0
    })
}

fn signal(child: &Child, signal: Signal) {
    let pid = Pid::from_raw(child.id().expect("running") as i32);
    kill(pid, signal).expect("send the signal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_without_waiting_for_the_drain() {
    let redis = RedisServer::start();
    let (mut gateway, addr) = start_gateway(&redis.url()).await;
    let mut kv = KeyValueClient::new(common::connect_channel(addr, Duration::from_secs(10)).await);
    let key = unique_key("signals");
    kv.get(pb::KeyValueGetRequest {
        key: key.clone(),
        ..Default::default()
    })
    .await
    .expect("the gateway serves");

    // A call held in Redis keeps the drain waiting (its timeouts are a minute): stop Redis
    // and send a Get, then wait until its bytes sit unread in Redis' socket.
    redis.suspend();
    let held = tokio::spawn(async move {
        kv.get(pb::KeyValueGetRequest {
            key,
            ..Default::default()
        })
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis_has_unread_input(redis.port) {
        assert!(Instant::now() < deadline, "the call never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    signal(&gateway, Signal::SIGTERM);
    // Still draining: the held call keeps it running.
    let drained_early = tokio::time::timeout(Duration::from_millis(500), gateway.wait()).await;
    assert!(
        drained_early.is_err(),
        "the drain did not wait for the held call"
    );
    let second = Instant::now();
    signal(&gateway, Signal::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(5), gateway.wait())
        .await
        .expect("the second signal ends the process at once")
        .unwrap();
    assert!(second.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{status:?}");
    redis.resume();
    let _ = held.await;
}
