//! The near cache against real redis-server processes: hits are served from memory and counted;
//! a write around the gateway (redis-cli, another client) is never read back stale once its
//! invalidation has arrived, also under concurrent readers; the gateway's own writes are read
//! back at once; TTLs are honoured from memory; a Redis restart or FLUSHALL drops everything;
//! the bounds on entries and bytes hold; configured prefixes cache without asking; with the
//! cache off, the flag changes nothing.
//!
//! Each test starts its own Redis (restarts, FLUSHALL and exact counters would disturb others).

mod common;

use common::requests::set;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, RedisServer, assert_code, duration, unique_key};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::hash_client::HashClient;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::monitor_client::MonitorClient;
use redis_gateway::pb::transaction_operation::{Op, Set as TxSet};
use redis_gateway::pb::ttl_status::State as TtlState;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

type Kv = KeyValueClient<Channel>;

/// A Get that may use the near cache.
fn cached_get(key: &str) -> pb::KeyValueGetRequest {
    pb::KeyValueGetRequest {
        key: key.to_owned(),
        near_cache: true,
        ..Default::default()
    }
}

async fn get(kv: &mut Kv, request: pb::KeyValueGetRequest) -> pb::KeyValueGetResponse {
    kv.get(request).await.expect("Get").into_inner()
}

/// The near cache's counters from Monitor.GetGatewayStats.
async fn cache_stats(gateway: &Gateway) -> pb::NearCacheStats {
    MonitorClient::new(gateway.channel().await)
        .get_gateway_stats(pb::MonitorGetGatewayStatsRequest {})
        .await
        .expect("GetGatewayStats")
        .into_inner()
        .near_cache
        .expect("near cache stats")
}

/// Waits until the cache's tracking connection is `up` (or not).
async fn wait_for_tracking(gateway: &Gateway, up: bool, within: Duration) {
    let started = Instant::now();
    loop {
        if cache_stats(gateway).await.tracking == up {
            return;
        }
        assert!(
            started.elapsed() < within,
            "tracking did not become {up} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts Redis and a gateway over it with `args`, its near cache tracking.
async fn start(args: &[&str]) -> (RedisServer, Gateway, Kv) {
    start_over(RedisServer::start(), args).await
}

/// Starts a gateway over `redis` with `args`, its near cache tracking.
async fn start_over(redis: RedisServer, args: &[&str]) -> (RedisServer, Gateway, Kv) {
    let gateway = Gateway::start(&redis.url(), args).await;
    wait_for_tracking(&gateway, true, Duration::from_secs(10)).await;
    let kv = gateway.kv().await;
    (redis, gateway, kv)
}

/// Reads `key` through the cache until a read comes from memory; every read must see
/// `expected`. (A write through the gateway drops the key at once, and Redis' invalidation of
/// that same write may arrive a moment later and drop the next fill too: the hit comes after.)
async fn until_hit(kv: &mut Kv, key: &str, expected: &str) {
    let started = Instant::now();
    loop {
        let read = get(kv, cached_get(key)).await;
        assert_eq!(read.value, expected, "{read:?}");
        if read.near_cache_hit {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never a hit for {key}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the gateway has handled more invalidated keys than `before`.
async fn wait_for_invalidations(gateway: &Gateway, before: u64) -> u64 {
    let started = Instant::now();
    loop {
        let now = cache_stats(gateway).await.invalidations;
        if now > before {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no invalidation arrived within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_get_is_served_from_memory_and_counted() {
    let (_redis, gateway, mut kv) = start(&[]).await;
    let key = unique_key("near-hit");
    kv.set(set(&key, "v1")).await.expect("Set");

    let first = get(&mut kv, cached_get(&key)).await;
    assert!(
        first.found && first.value == "v1" && !first.near_cache_hit,
        "{first:?}"
    );
    let second = get(&mut kv, cached_get(&key)).await;
    assert!(
        second.found && second.value == "v1" && second.near_cache_hit,
        "{second:?}"
    );
    // A Get without the flag never uses the cache.
    let plain = get(
        &mut kv,
        pb::KeyValueGetRequest {
            key: key.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(plain.found && !plain.near_cache_hit, "{plain:?}");
    // A missing key is cached as missing.
    let missing = unique_key("near-missing");
    assert!(!get(&mut kv, cached_get(&missing)).await.found);
    let again = get(&mut kv, cached_get(&missing)).await;
    assert!(!again.found && again.near_cache_hit, "{again:?}");

    let stats = cache_stats(&gateway).await;
    assert!(stats.enabled && stats.tracking, "{stats:?}");
    assert_eq!(
        (stats.hits, stats.misses, stats.entries),
        (2, 2, 2),
        "{stats:?}"
    );
    assert!(stats.bytes > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_redis_cli_is_never_read_stale_after_its_invalidation_arrived() {
    let (redis, gateway, mut kv) = start(&[]).await;
    let key = unique_key("near-cli");
    let port = redis.port.to_string();
    let cli = |args: &[&str]| {
        let output = Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    };
    let mut invalidations = cache_stats(&gateway).await.invalidations;
    for round in 0..40 {
        let value = format!("v{round}");
        // Cached before the write (a hit from the second round on).
        let before = get(&mut kv, cached_get(&key)).await;
        let _ = get(&mut kv, cached_get(&key)).await;
        cli(&["SET", &key, &value]);
        invalidations = wait_for_invalidations(&gateway, invalidations).await;
        for _ in 0..3 {
            let after = get(&mut kv, cached_get(&key)).await;
            assert_eq!(
                after.value, value,
                "round {round}: read {:?} after the invalidation (before the write: {:?})",
                after.value, before.value
            );
        }
    }
    // A delete and a type change made around the gateway are seen too.
    cli(&["DEL", &key]);
    invalidations = wait_for_invalidations(&gateway, invalidations).await;
    assert!(!get(&mut kv, cached_get(&key)).await.found);
    cli(&["HSET", &key, "field", "value"]);
    wait_for_invalidations(&gateway, invalidations).await;
    let status = kv.get(cached_get(&key)).await.expect_err("a hash now");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("holds a hash"), "{status:?}");
    // FLUSHALL drops the whole cache.
    let flushes = cache_stats(&gateway).await.flushes;
    let other = unique_key("near-cli-other");
    kv.set(set(&other, "kept?")).await.expect("Set");
    assert!(get(&mut kv, cached_get(&other)).await.found);
    cli(&["FLUSHALL"]);
    let started = Instant::now();
    while cache_stats(&gateway).await.flushes == flushes {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "FLUSHALL did not flush"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = get(&mut kv, cached_get(&other)).await;
    assert!(!after.found, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_never_go_back_and_all_end_on_the_last_write() {
    let (redis, gateway, _kv) = start(&[]).await;
    let key = unique_key("near-race");
    let writer = redis.client().await;
    let _: () = writer.set(&key, 0, None, None, false).await.expect("SET");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut kv = gateway.kv().await;
        let (key, done) = (key.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut last = 0u64;
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let read = get(&mut kv, cached_get(&key)).await;
                let value: u64 = std::str::from_utf8(&read.value).unwrap().parse().unwrap();
                assert!(
                    value >= last,
                    "read {value} after {last}: the cache went back"
                );
                last = value;
                reads += 1;
            }
            reads
        }));
    }
    // Writes around the gateway while the readers read (and fill) through it.
    let writes = 2_000u64;
    for value in 1..=writes {
        let _: () = writer
            .set(&key, value, None, None, false)
            .await
            .expect("SET");
        if value % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Once the last invalidation has arrived, every reader reads the last value.
    let started = Instant::now();
    let mut kv = gateway.kv().await;
    loop {
        let read = get(&mut kv, cached_get(&key)).await;
        if read.value == writes.to_string() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still reading {:?} 5 s after the last write",
            read.value
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for reader in readers {
        total += reader.await.expect("reader");
    }
    for _ in 0..4 {
        let read = get(&mut gateway.kv().await, cached_get(&key)).await;
        assert_eq!(read.value, writes.to_string());
    }
    let stats = cache_stats(&gateway).await;
    assert!(
        total > 0 && stats.hits > 0 && stats.invalidations > 0,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_writes_are_read_back_at_once() {
    let (_redis, gateway, mut kv) = start(&[]).await;
    let mut hashes = HashClient::new(gateway.channel().await);
    let key = unique_key("near-own");
    let warm = |kv: &mut Kv, key: &str| {
        let mut kv = kv.clone();
        let key = key.to_owned();
        async move {
            let current = get(&mut kv, cached_get(&key)).await.value;
            let current = String::from_utf8(current.to_vec()).unwrap();
            until_hit(&mut kv, &key, &current).await;
        }
    };
    kv.set(set(&key, "1")).await.expect("Set");
    warm(&mut kv, &key).await;
    kv.set(set(&key, "2")).await.expect("Set");
    assert_eq!(get(&mut kv, cached_get(&key)).await.value, "2");

    warm(&mut kv, &key).await;
    kv.increment(pb::KeyValueIncrementRequest {
        key: key.clone(),
        delta: 5,
        ..Default::default()
    })
    .await
    .expect("Increment");
    assert_eq!(get(&mut kv, cached_get(&key)).await.value, "7");

    warm(&mut kv, &key).await;
    kv.transaction(pb::KeyValueTransactionRequest {
        guards: Vec::new(),
        ops: vec![pb::TransactionOperation {
            op: Some(Op::Set(TxSet {
                key: key.clone(),
                value: Bytes::from_static(b"tx"),
                ttl: None,
            })),
        }],
    })
    .await
    .expect("Transaction");
    assert_eq!(get(&mut kv, cached_get(&key)).await.value, "tx");

    // A TTL set through the gateway shows in a cached read's TTL at once.
    warm(&mut kv, &key).await;
    kv.expire(pb::KeyValueExpireRequest {
        key: key.clone(),
        ttl: Some(duration(Duration::from_secs(100))),
        ..Default::default()
    })
    .await
    .expect("Expire");
    let with_ttl = get(
        &mut kv,
        pb::KeyValueGetRequest {
            include_ttl: true,
            ..cached_get(&key)
        },
    )
    .await;
    let ttl = with_ttl.ttl.expect("ttl");
    assert_eq!(ttl.state(), TtlState::Expiring, "{ttl:?}");

    warm(&mut kv, &key).await;
    kv.delete(pb::KeyValueDeleteRequest {
        keys: vec![key.clone()],
    })
    .await
    .expect("Delete");
    assert!(!get(&mut kv, cached_get(&key)).await.found);

    // A hash written through the gateway where a missing key was cached.
    warm(&mut kv, &key).await;
    hashes
        .set(pb::HashSetRequest {
            name: key.clone(),
            fields: [("f".to_owned(), Bytes::from_static(b"v"))].into(),
            ttl: None,
        })
        .await
        .expect("Hash.Set");
    assert_code(kv.get(cached_get(&key)).await, Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_value_is_not_served_past_its_ttl() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "local"]);
    let (redis, _gateway, mut kv) = start_over(redis, &[]).await;
    let direct = redis.client().await;
    // Redis' active expiry would remove the key within about 100 ms of its TTL; stop it, so
    // that only the gateway's own TTL bookkeeping stands between a reader and a stale value.
    let _: () = direct
        .custom(fred::cmd!("DEBUG"), vec!["SET-ACTIVE-EXPIRE", "0"])
        .await
        .expect("DEBUG SET-ACTIVE-EXPIRE 0");
    let key = unique_key("near-ttl");
    kv.set(pb::KeyValueSetRequest {
        ttl: Some(duration(Duration::from_millis(400))),
        ..set(&key, "short-lived")
    })
    .await
    .expect("Set");
    get(&mut kv, cached_get(&key)).await;
    let hit = get(
        &mut kv,
        pb::KeyValueGetRequest {
            include_ttl: true,
            ..cached_get(&key)
        },
    )
    .await;
    assert!(hit.near_cache_hit && hit.found, "{hit:?}");
    let ttl = hit.ttl.expect("ttl");
    assert_eq!(ttl.state(), TtlState::Expiring);
    let left = ttl.ttl.expect("remaining");
    assert!(left.seconds == 0 && left.nanos <= 400_000_000, "{left:?}");

    tokio::time::sleep(Duration::from_millis(450)).await;
    let expired = get(&mut kv, cached_get(&key)).await;
    assert!(!expired.found, "served past its TTL: {expired:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_drops_the_cache_and_reads_fail_rather_than_serve_it() {
    let (redis, gateway, mut kv) = start(&[]).await;
    let key = unique_key("near-restart");
    kv.set(set(&key, "before the restart")).await.expect("Set");
    get(&mut kv, cached_get(&key)).await;
    assert!(get(&mut kv, cached_get(&key)).await.near_cache_hit);
    let flushes = cache_stats(&gateway).await.flushes;

    redis.stop();
    wait_for_tracking(&gateway, false, Duration::from_secs(5)).await;
    let stats = cache_stats(&gateway).await;
    assert_eq!(stats.entries, 0, "{stats:?}");
    assert!(stats.flushes > flushes, "{stats:?}");
    let status = kv
        .get(common::with_deadline(
            cached_get(&key),
            Duration::from_secs(2),
        ))
        .await
        .expect_err("Redis is down and the cache was dropped");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The restarted Redis has no data (no persistence): the old value must not come back.
    redis.restart();
    wait_for_tracking(&gateway, true, Duration::from_secs(20)).await;
    gateway
        .wait_for_health(ServingStatus::Serving, Duration::from_secs(20))
        .await;
    let mut kv = gateway.kv().await;
    let read = get(&mut kv, cached_get(&key)).await;
    assert!(!read.found, "{read:?}");
    kv.set(set(&key, "after")).await.expect("Set");
    until_hit(&mut kv, &key, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_entry_and_byte_bounds() {
    let (_redis, gateway, mut kv) = start(&[
        "--near-cache-max-entries",
        "50",
        "--near-cache-max-bytes",
        "64KiB",
    ])
    .await;
    for index in 0..400 {
        let key = format!("{}-{index}", unique_key("near-bound"));
        kv.set(set(&key, "small")).await.expect("Set");
        get(&mut kv, cached_get(&key)).await;
    }
    let stats = cache_stats(&gateway).await;
    assert!(stats.entries > 0 && stats.entries <= 50, "{stats:?}");
    assert!(stats.bytes <= 64 << 10, "{stats:?}");
    assert!(stats.evictions > 0, "{stats:?}");

    // Large values: the byte bound binds first (small entries may stay: each is charged at
    // least 64 KiB / 50).
    let value = "x".repeat(4 << 10);
    for index in 0..100 {
        let key = format!("{}-{index}", unique_key("near-bound-large"));
        kv.set(set(&key, &value)).await.expect("Set");
        get(&mut kv, cached_get(&key)).await;
    }
    let stats = cache_stats(&gateway).await;
    assert!(stats.bytes <= 64 << 10, "{stats:?}");
    assert!(stats.entries <= 50, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_under_configured_prefixes_are_cached_without_asking() {
    let (_redis, _gateway, mut kv) = start(&["--near-cache-prefixes", "cfg:,feature:"]).await;
    let plain_get = |key: &str| pb::KeyValueGetRequest {
        key: key.to_owned(),
        ..Default::default()
    };
    let configured = format!("cfg:{}", unique_key("near-prefix"));
    let other = unique_key("near-prefix-other");
    for key in [&configured, &other] {
        kv.set(set(key, "v")).await.expect("Set");
        get(&mut kv, plain_get(key)).await;
    }
    assert!(get(&mut kv, plain_get(&configured)).await.near_cache_hit);
    assert!(!get(&mut kv, plain_get(&other)).await.near_cache_hit);

    // GetMany: all keys under the prefixes, or the flag.
    let many = kv
        .get_many(pb::KeyValueGetManyRequest {
            keys: vec![configured.clone()],
            ..Default::default()
        })
        .await
        .expect("GetMany")
        .into_inner();
    assert_eq!(many.near_cache_hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_mixes_memory_and_one_read_and_reads_other_types_as_missing() {
    let (redis, _gateway, mut kv) = start(&[]).await;
    let direct = redis.client().await;
    let (a, b, list) = (
        unique_key("near-many-a"),
        unique_key("near-many-b"),
        unique_key("near-many-list"),
    );
    kv.set(set(&a, "A")).await.expect("Set");
    kv.set(set(&b, "B")).await.expect("Set");
    let _: i64 = direct
        .custom(fred::cmd!("RPUSH"), vec![list.as_str(), "x"])
        .await
        .expect("RPUSH");
    get(&mut kv, cached_get(&a)).await;
    let request = pb::KeyValueGetManyRequest {
        keys: vec![
            a.clone(),
            b.clone(),
            list.clone(),
            unique_key("near-many-none"),
        ],
        near_cache: true,
    };
    let first = kv
        .get_many(request.clone())
        .await
        .expect("GetMany")
        .into_inner();
    assert_eq!(first.near_cache_hits, 1, "{first:?}");
    let found: Vec<_> = first
        .values
        .iter()
        .map(|value| (value.found, value.value.clone()))
        .collect();
    assert_eq!(
        found,
        [
            (true, Bytes::from_static(b"A")),
            (true, Bytes::from_static(b"B")),
            (false, Bytes::new()),
            (false, Bytes::new())
        ]
    );
    let second = kv.get_many(request).await.expect("GetMany").into_inner();
    assert_eq!(second.near_cache_hits, 4, "{second:?}");
    assert_eq!(second.values, first.values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_the_flag_changes_nothing() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &["--near-cache-max-entries", "0"]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("near-off");
    kv.set(set(&key, "v")).await.expect("Set");
    for _ in 0..3 {
        let read = get(&mut kv, cached_get(&key)).await;
        assert!(read.found && !read.near_cache_hit, "{read:?}");
    }
    let stats = cache_stats(&gateway).await;
    assert!(!stats.enabled && !stats.tracking, "{stats:?}");
    assert_eq!((stats.hits, stats.misses, stats.entries), (0, 0, 0));
}
