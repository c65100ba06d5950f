//! Lock client helpers shared by the Lock test files: typed requests and polling on Inspect.

use std::time::{Duration, Instant};

use redis_gateway::pb;
use redis_gateway::pb::lock_client::LockClient;
use tonic::transport::Channel;

use super::{Gateway, duration, start_with};

/// A Lock client.
pub type Locks = LockClient<Channel>;

/// A gateway over the shared Redis and a Lock client to it.
pub async fn start() -> (Gateway, Locks) {
    let (gateway, _) = start_with(&[]).await;
    let locks = LockClient::new(gateway.channel().await);
    (gateway, locks)
}

/// An Acquire request; a zero `wait` means none.
pub fn acquire_request(name: &str, ttl: Duration, wait: Duration) -> pb::LockAcquireRequest {
    pb::LockAcquireRequest {
        name: name.to_owned(),
        ttl: Some(duration(ttl)),
        wait_timeout: (!wait.is_zero()).then(|| duration(wait)),
        owner: "test".into(),
        lock_delay: None,
    }
}

/// Acquire, which must answer (acquired or not).
pub async fn acquire(
    locks: &mut Locks,
    name: &str,
    ttl: Duration,
    wait: Duration,
) -> pb::LockAcquireResponse {
    locks
        .acquire(acquire_request(name, ttl, wait))
        .await
        .expect("acquire")
        .into_inner()
}

/// Release; whether the token held the lock.
pub async fn release(locks: &mut Locks, name: &str, token: &str) -> bool {
    locks
        .release(pb::LockReleaseRequest {
            name: name.to_owned(),
            token: token.to_owned(),
        })
        .await
        .expect("release")
        .into_inner()
        .released
}

/// Inspect.
pub async fn inspect(locks: &mut Locks, name: &str) -> pb::LockInspectResponse {
    locks
        .inspect(pb::LockInspectRequest {
            name: name.to_owned(),
        })
        .await
        .expect("inspect")
        .into_inner()
}

/// Polls Inspect until `waiters` callers are queued on `name`, failing after `within`.
pub async fn wait_for_waiters(locks: &mut Locks, name: &str, waiters: u32, within: Duration) {
    let started = Instant::now();
    loop {
        let seen = inspect(locks, name).await.waiters;
        if seen == waiters {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{seen} waiters on {name} after {within:?}, expected {waiters}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
