//! Lock benchmark against a running gateway (started by `scripts/bench-lock.sh`):
//!
//! - uncontended: many clients each take and release their own lock; Acquire+Release pairs
//!   per second and the latency of a pair;
//! - contended: several clients queue on one lock and hand it on as soon as they get it; the
//!   hand-off latency (from the holder sending Release to the next waiter's Acquire being
//!   answered) and hand-offs per second.
//!
//! Usage: `cargo bench --bench lock -- <gateway host:port> [pairs] [clients] [waiters]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_gateway::pb;
use redis_gateway::pb::lock_client::LockClient;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

/// Channels (HTTP/2 connections) the clients share.
const CHANNELS: usize = 8;

fn ttl(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

fn report(what: &str, count: usize, took: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{what:<44} {:>9.0}/s  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        count as f64 / took.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&latencies, 1.0).as_secs_f64() * 1e3,
    );
}

async fn channels(addr: &str) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("gateway address");
        channels.push(endpoint.connect().await.expect("connect to the gateway"));
    }
    channels
}

/// Each client takes and releases its own lock, `pairs / clients` times.
async fn uncontended(channels: &[Channel], pairs: usize, clients: usize) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let mut locks = LockClient::new(channels[client % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("bench-lock-{client}");
            let mut latencies = Vec::with_capacity(pairs / clients);
            for _ in 0..pairs / clients {
                let begun = Instant::now();
                let granted = locks
                    .acquire(pb::LockAcquireRequest {
                        name: name.clone(),
                        ttl: ttl(10),
                        ..Default::default()
                    })
                    .await
                    .expect("acquire")
                    .into_inner();
                assert!(granted.acquired, "{name} is this client's own lock");
                let released = locks
                    .release(pb::LockReleaseRequest {
                        name: name.clone(),
                        token: granted.token,
                    })
                    .await
                    .expect("release")
                    .into_inner();
                assert!(released.released);
                latencies.push(begun.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let took = started.elapsed();
    report(
        &format!("uncontended Acquire+Release, {clients} clients"),
        latencies.len(),
        took,
        latencies,
    );
}

/// `waiters` clients queue on one lock; each holder releases at once. Hand-off latency: from
/// the holder sending Release to the next waiter's Acquire being answered.
async fn contended(channels: &[Channel], handoffs: usize, waiters: usize) {
    let released_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for waiter in 0..waiters {
        let mut locks = LockClient::new(channels[waiter % channels.len()].clone());
        let released_at = released_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for _ in 0..handoffs / waiters {
                let granted = locks
                    .acquire(pb::LockAcquireRequest {
                        name: "bench-contended".into(),
                        ttl: ttl(10),
                        wait_timeout: ttl(30),
                        ..Default::default()
                    })
                    .await
                    .expect("acquire")
                    .into_inner();
                assert!(granted.acquired, "a 30 s wait should succeed");
                if let Some(released) = released_at.lock().await.take() {
                    latencies.push(released.elapsed());
                }
                *released_at.lock().await = Some(Instant::now());
                locks
                    .release(pb::LockReleaseRequest {
                        name: "bench-contended".into(),
                        token: granted.token,
                    })
                    .await
                    .expect("release");
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("waiter task"));
    }
    let took = started.elapsed();
    report(
        &format!("contended hand-off, {waiters} waiters on one lock"),
        latencies.len(),
        took,
        latencies,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs benches too, without `--bench`: nothing to load then.
    if !args.iter().any(|arg| arg == "--bench") {
        println!("benches/lock.rs loads a running gateway: run scripts/bench-lock.sh");
        return;
    }
    let args: Vec<String> = args.into_iter().filter(|arg| arg != "--bench").collect();
    let addr = args.first().cloned().unwrap_or_else(|| {
        eprintln!(
            "usage: cargo bench --bench lock -- <gateway host:port> [pairs] [clients] [waiters]"
        );
        std::process::exit(2)
    });
    let number = |index: usize, default: usize| {
        args.get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let (pairs, clients, waiters) = (number(1, 50_000), number(2, 64), number(3, 8));
    let channels = channels(&addr).await;
    uncontended(&channels, pairs, clients).await;
    contended(&channels, pairs / 10, waiters).await;
}
