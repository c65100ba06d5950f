//! KeyValue.WatchExpirations against real redis-server processes: `subscribed` then expired
//! keys (real TTLs), one event each on many concurrent subscribers, pattern and kind filters,
//! evictions told apart from expirations, a subscriber that never reads (others unaffected, it
//! gets `gap{lagged}`), a Redis restart (`gap{reconnected}`, then events again), resuming after
//! a disconnect, a Redis whose CONFIG is disabled (FAILED_PRECONDITION), and bad input.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Gateway, RedisServer, assert_status, duration, unique_key};
use fred::prelude::*;
use fred::types::Value;
use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::key_value_watch_expirations_response::{Event, Expired, Gap};
use tonic::Code;
use tonic::Streaming;
use tonic::transport::Channel;

type Kv = KeyValueClient<Channel>;
type Events = Streaming<pb::KeyValueWatchExpirationsResponse>;

/// How long a test waits for an event that should come soon (expiry lags the TTL by up to
/// Redis' 100 ms cycle; a loaded 2-core machine adds more).
const SOON: Duration = Duration::from_secs(5);

fn request(pattern: &str, kinds: &[pb::KeyEventKind]) -> pb::KeyValueWatchExpirationsRequest {
    pb::KeyValueWatchExpirationsRequest {
        pattern: pattern.to_owned(),
        kinds: kinds.iter().map(|kind| *kind as i32).collect(),
        resume_after: String::new(),
    }
}

/// Opens a watch and returns the stream after its `subscribed` message, and that cursor.
async fn watch(kv: &mut Kv, request: pb::KeyValueWatchExpirationsRequest) -> (Events, String) {
    let mut events = kv
        .watch_expirations(request)
        .await
        .expect("WatchExpirations opens")
        .into_inner();
    match next(&mut events, SOON).await {
        Some(Event::Subscribed(subscribed)) => (events, subscribed.cursor),
        other => panic!("expected `subscribed` first, got {other:?}"),
    }
}

/// The next event, `None` if the stream ended; fails after `within`.
async fn next(events: &mut Events, within: Duration) -> Option<Event> {
    tokio::time::timeout(within, events.message())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .expect("the stream carries no error")
        .map(|message| message.event.expect("every message has an event"))
}

async fn next_key_event(events: &mut Events) -> Expired {
    match next(events, SOON).await {
        Some(Event::Expired(expired)) => expired,
        other => panic!("expected a key event, got {other:?}"),
    }
}

async fn set_with_ttl(kv: &mut Kv, key: &str, ttl: Duration) {
    kv.set(pb::KeyValueSetRequest {
        key: key.to_owned(),
        value: b"v".to_vec().into(),
        ttl: Some(duration(ttl)),
        ..Default::default()
    })
    .await
    .expect("set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_reported_after_subscribed() {
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let prefix = unique_key("watch-basic");
    let (mut events, cursor) = watch(&mut kv, request(&format!("{prefix}:*"), &[])).await;
    assert!(!cursor.is_empty());
    set_with_ttl(
        &mut kv,
        &format!("{prefix}:other-pattern"),
        Duration::from_millis(100),
    )
    .await;
    let key = format!("{prefix}:a");
    set_with_ttl(&mut kv, &key, Duration::from_millis(200)).await;
    // Not matching the pattern: no event for it.
    set_with_ttl(
        &mut kv,
        &format!("elsewhere-{prefix}"),
        Duration::from_millis(100),
    )
    .await;
    let expired = next_key_event(&mut events).await;
    let first_key = expired.key.clone();
    // The pattern matches both of this test's keys; order follows expiry.
    let mut seen = HashSet::from([first_key]);
    seen.insert(next_key_event(&mut events).await.key);
    assert_eq!(
        seen,
        HashSet::from([key.clone(), format!("{prefix}:other-pattern")])
    );
    assert_eq!(expired.kind, pb::KeyEventKind::Expired as i32);
    assert!(expired.observed_at.is_some());
    assert!(expired.cursor > cursor, "cursors increase");
    // Deleting is not reported unless asked for.
    kv.delete(pb::KeyValueDeleteRequest {
        keys: vec![format!("{prefix}:gone")],
    })
    .await
    .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), events.message()).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_each_expiration_exactly_once() {
    const SUBSCRIBERS: usize = 500;
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("watch-fanout");
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(gateway.channel().await);
    }
    let mut streams = Vec::new();
    for index in 0..SUBSCRIBERS {
        let mut client = KeyValueClient::new(channels[index % channels.len()].clone());
        streams.push(watch(&mut client, request(&key, &[])).await.0);
    }
    let admin = redis.client().await;
    let clients: String = admin
        .client_list::<String, String>(None, None)
        .await
        .unwrap();
    let subscribers = common::pubsub_clients_besides_near_cache(&clients);
    // The lock wake-up subscription and the key-event one: not one per watcher.
    assert!(
        subscribers <= 2,
        "{subscribers} pub/sub connections:\n{clients}"
    );

    set_with_ttl(&mut kv, &key, Duration::from_secs(1)).await;
    let mut tasks = Vec::new();
    for mut events in streams {
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let expired = next_key_event(&mut events).await;
            assert_eq!(expired.key, key);
            let more = tokio::time::timeout(Duration::from_millis(500), events.message()).await;
            assert!(more.is_err(), "a second event: {more:?}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_tell_deleted_and_evicted_apart_from_expired() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]);
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let prefix = unique_key("watch-kinds");
    let (mut events, _) = watch(
        &mut kv,
        request(
            &format!("{prefix}:*"),
            &[pb::KeyEventKind::Deleted, pb::KeyEventKind::Evicted],
        ),
    )
    .await;
    let deleted = format!("{prefix}:deleted");
    set_with_ttl(&mut kv, &deleted, Duration::from_secs(60)).await;
    kv.delete(pb::KeyValueDeleteRequest {
        keys: vec![deleted.clone()],
    })
    .await
    .unwrap();
    let event = next_key_event(&mut events).await;
    assert_eq!(event.key, deleted);
    assert_eq!(event.kind, pb::KeyEventKind::Deleted as i32);

    // Fill past maxmemory: Redis evicts some keys.
    let filler = vec![b'x'; 64 * 1024];
    for index in 0..200 {
        let _ = kv
            .set(pb::KeyValueSetRequest {
                key: format!("{prefix}:fill-{index}"),
                value: filler.clone().into(),
                ..Default::default()
            })
            .await;
    }
    let evicted = next_key_event(&mut events).await;
    assert_eq!(
        evicted.kind,
        pb::KeyEventKind::Evicted as i32,
        "{evicted:?}"
    );
    assert!(evicted.key.starts_with(&format!("{prefix}:fill-")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_gets_a_gap_and_slows_no_one() {
    // More than the gateway buffers per process (4096), in bursts of 500.
    const KEYS: usize = 12_000;
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    // One slot, so that the setup's MSET and DEL work on a cluster too.
    let prefix = common::slot_tag("watch-lag");
    let pattern = format!("{prefix}:*");
    let (mut reader, _) = watch(&mut kv, request(&pattern, &[pb::KeyEventKind::Deleted])).await;
    // A client that does not read: its HTTP/2 windows are small, so it soon stops accepting
    // data and the gateway's send to it waits.
    let sleepy_channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr))
            .unwrap()
            .initial_stream_window_size(Some(2048))
            .initial_connection_window_size(Some(65_535))
            .connect()
            .await
            .unwrap();
    let (mut sleeper, _) = watch(
        &mut KeyValueClient::new(sleepy_channel),
        request(&pattern, &[pb::KeyEventKind::Deleted]),
    )
    .await;
    let admin = redis.client().await;
    let keys: Vec<String> = (0..KEYS).map(|index| format!("{prefix}:{index}")).collect();
    for chunk in keys.chunks(500) {
        let pairs: Vec<(String, String)> =
            chunk.iter().map(|key| (key.clone(), "v".into())).collect();
        let _: () = admin.mset(pairs).await.unwrap();
        let _: i64 = admin.del(chunk.to_vec()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The reading subscriber gets every deletion, promptly.
    let started = Instant::now();
    let mut seen = 0;
    while seen < KEYS {
        match next(&mut reader, SOON).await {
            Some(Event::Expired(_)) => seen += 1,
            other => panic!("the reading subscriber got {other:?}"),
        }
    }
    eprintln!(
        "{KEYS} events to the reading subscriber in {:?}",
        started.elapsed()
    );
    // The one that did not read finds a gap saying how many it lost, then carries on.
    let mut delivered = 0u64;
    let mut dropped = 0u64;
    let gap: Gap = loop {
        match next(&mut sleeper, SOON).await {
            Some(Event::Expired(_)) => delivered += 1,
            Some(Event::Gap(gap)) => break gap,
            other => panic!("expected a gap, got {other:?}"),
        }
    };
    assert_eq!(gap.reason, "lagged");
    dropped += gap.dropped;
    assert!(dropped > 0);
    // The gateway's statistics count both streams and what was dropped.
    let mut monitor =
        redis_gateway::pb::monitor_client::MonitorClient::new(gateway.channel().await);
    let stats = monitor
        .get_gateway_stats(pb::MonitorGetGatewayStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.expiry_subscribers, 2, "{stats:?}");
    assert!(stats.events_dropped >= gap.dropped, "{stats:?}");
    assert!(stats.events_delivered >= KEYS as u64, "{stats:?}");
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), sleeper.message())
            .await
            .unwrap_or(Ok(None))
    {
        match message.event {
            Some(Event::Expired(_)) => delivered += 1,
            Some(Event::Gap(gap)) => dropped += gap.dropped,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        delivered + dropped,
        KEYS as u64,
        "every event delivered or counted as dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_a_gap_and_events_resume() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let key = unique_key("watch-restart");
    let (mut events, _) = watch(&mut kv, request(&key, &[])).await;
    redis.restart();
    let gap = match next(&mut events, Duration::from_secs(15)).await {
        Some(Event::Gap(gap)) => gap,
        other => panic!("expected a gap after the restart, got {other:?}"),
    };
    assert_eq!(gap.reason, "reconnected");
    // The restarted Redis lost the flags the gateway set; it sets them again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        set_with_ttl(&mut kv, &key, Duration::from_millis(100)).await;
        match tokio::time::timeout(Duration::from_secs(1), events.message()).await {
            Ok(Ok(Some(message))) => {
                if let Some(Event::Expired(expired)) = message.event {
                    assert_eq!(expired.key, key);
                    break;
                }
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "no expiry after the restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_with_resume_after_gets_what_it_missed_once() {
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let prefix = unique_key("watch-resume");
    let pattern = format!("{prefix}:*");
    let (mut events, _) = watch(&mut kv, request(&pattern, &[pb::KeyEventKind::Deleted])).await;
    let admin = redis.client().await;
    let _: () = admin
        .set(format!("{prefix}:0"), "v", None, None, false)
        .await
        .unwrap();
    let _: i64 = admin.del(format!("{prefix}:0")).await.unwrap();
    let first = next_key_event(&mut events).await;
    drop(events);
    // Missed while disconnected (recording goes on for the resume window).
    let missed: Vec<String> = (1..=5).map(|index| format!("{prefix}:{index}")).collect();
    for key in &missed {
        let _: () = admin.set(key, "v", None, None, false).await.unwrap();
        let _: i64 = admin.del(key).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resumed = pb::KeyValueWatchExpirationsRequest {
        resume_after: first.cursor.clone(),
        ..request(&pattern, &[pb::KeyEventKind::Deleted])
    };
    let (mut events, _) = watch(&mut kv, resumed.clone()).await;
    let mut got = Vec::new();
    for _ in 0..missed.len() {
        got.push(next_key_event(&mut events).await.key);
    }
    assert_eq!(got, missed, "the missed events, in order");
    let more = tokio::time::timeout(Duration::from_millis(300), events.message()).await;
    assert!(more.is_err(), "an event delivered twice: {more:?}");
    // A cursor that is not one is refused.
    resumed.resume_after = "yesterday".into();
    assert_status(
        kv.watch_expirations(resumed).await,
        Code::InvalidArgument,
        "resume_after",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_config_and_flags_watching_is_failed_precondition() {
    let redis = RedisServer::start_with(&["--rename-command", "CONFIG", ""]);
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match kv.watch_expirations(request("", &[])).await {
            Err(status) => break status,
            Ok(_) => {
                assert!(Instant::now() < deadline, "watching should be refused");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("notify-keyspace-events"),
        "{status:?}"
    );
    assert!(status.message().contains("Exeg"), "{status:?}");
    // The rest of the gateway works.
    set_with_ttl(
        &mut kv,
        &unique_key("watch-noconfig"),
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test]
async fn bad_watch_requests_are_invalid_argument() {
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    assert_status(
        kv.watch_expirations(request("a[b", &[])).await,
        Code::InvalidArgument,
        "pattern",
    );
    assert_status(
        kv.watch_expirations(request("__gw:*", &[])).await,
        Code::InvalidArgument,
        "pattern",
    );
    let mut bad_kind = request("", &[]);
    bad_kind.kinds = vec![42];
    assert_status(
        kv.watch_expirations(bad_kind).await,
        Code::InvalidArgument,
        "kinds[0]",
    );
}

/// `--no-configure-keyspace-events` leaves Redis alone: watching is refused while the flags are
/// missing, and works once an operator enables them (the gateway looks again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_left_alone_are_explained_and_picked_up_once_enabled() {
    let redis = RedisServer::start();
    let admin = redis.client().await;
    let _: Value = admin
        .custom(
            fred::cmd!("CONFIG"),
            vec!["SET", "notify-keyspace-events", "K$"],
        )
        .await
        .unwrap();
    let gateway = Gateway::start(&redis.url(), &["--no-configure-keyspace-events"]).await;
    let mut kv = gateway.kv().await;
    let refused = kv.watch_expirations(request("", &[])).await;
    let status = refused.expect_err("flags are missing");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("\"Exeg\""), "{status:?}");
    let flags: Value = admin
        .custom(fred::cmd!("CONFIG"), vec!["GET", "notify-keyspace-events"])
        .await
        .unwrap();
    assert!(
        !format!("{flags:?}").contains("Ex"),
        "the gateway changed the flags: {flags:?}"
    );

    let _: Value = admin
        .custom(
            fred::cmd!("CONFIG"),
            vec!["SET", "notify-keyspace-events", "K$Exeg"],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match kv.watch_expirations(request("", &[])).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert!(Instant::now() < deadline, "flags enabled but still refused");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// A graceful shutdown ends watch streams (UNAVAILABLE, "shutting down") instead of waiting
/// for them, and the gateway stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_end_when_the_gateway_drains() {
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut kv = gateway.kv().await;
    let (mut events, _) = watch(&mut kv, request("", &[])).await;
    let started = Instant::now();
    gateway.shutdown.cancel();
    let ended = tokio::time::timeout(SOON, events.message())
        .await
        .expect("the stream ends on drain");
    let status = ended.expect_err("ended with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    gateway.stopped().await.expect("clean stop");
    assert!(
        started.elapsed() < SOON,
        "drain took {:?}",
        started.elapsed()
    );
}
