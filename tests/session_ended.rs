//! Session.WatchEnded against real redis-server processes (no keyspace notifications
//! involved): a session left to expire, one deleted, one rotated and ones revoked by
//! DeleteByUser each yield exactly one `ended` with the right user, id and reason; expiry is
//! reported within the sweep's bound; `resume_after` replays missed endings in order, once;
//! two gateways on one Redis sweep each ending into the stream once; expired sessions leave
//! the index with nobody watching; the due index keeps a deadline marked mid-sweep; bad input.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Gateway, assert_status, duration, shared_redis, unique_key};
use fred::prelude::*;
use fred::types::Value;
use redis_gateway::pb;
use redis_gateway::pb::SessionEndReason as Reason;
use redis_gateway::pb::session_client::SessionClient;
use redis_gateway::pb::session_watch_ended_response::{Ended, Event};
use tonic::Code;
use tonic::Streaming;
use tonic::transport::Channel;

type Sessions = SessionClient<Channel>;
type Endings = Streaming<pb::SessionWatchEndedResponse>;

/// How long a test waits for something that should come soon (a sweep is due every second
/// plus jitter; a loaded 2-core machine adds more).
const SOON: Duration = Duration::from_secs(6);

async fn sessions(gateway: &Gateway) -> Sessions {
    SessionClient::new(gateway.channel().await)
}

async fn create(sessions: &mut Sessions, user: &str, idle: Duration) -> pb::SessionInfo {
    sessions
        .create(pb::SessionCreateRequest {
            user_id: user.to_owned(),
            idle_timeout: Some(duration(idle)),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
}

async fn delete(sessions: &mut Sessions, id: &str) {
    let deleted = sessions
        .delete(pb::SessionDeleteRequest {
            session_id: id.to_owned(),
        })
        .await
        .expect("delete")
        .into_inner()
        .deleted;
    assert!(deleted);
}

/// Opens WatchEnded and returns the stream after `subscribed`, and that cursor.
async fn watch(sessions: &mut Sessions, resume_after: &str) -> (Endings, String) {
    let mut endings = sessions
        .watch_ended(pb::SessionWatchEndedRequest {
            resume_after: resume_after.to_owned(),
        })
        .await
        .expect("WatchEnded opens")
        .into_inner();
    match next(&mut endings, SOON).await {
        Some(Event::Subscribed(subscribed)) => (endings, subscribed.cursor),
        other => panic!("expected `subscribed` first, got {other:?}"),
    }
}

/// The next message, `None` when nothing comes within `within`.
async fn next(endings: &mut Endings, within: Duration) -> Option<Event> {
    tokio::time::timeout(within, endings.message())
        .await
        .ok()
        .map(|message| {
            message
                .expect("the stream carries no error")
                .expect("the stream stays open")
                .event
                .expect("every message has an event")
        })
}

async fn next_ended(endings: &mut Endings) -> Ended {
    match next(endings, SOON).await {
        Some(Event::Ended(ended)) => ended,
        other => panic!("expected an ending, got {other:?}"),
    }
}

fn millis(timestamp: &Option<prost_types::Timestamp>) -> i64 {
    let timestamp = timestamp.as_ref().expect("timestamp set");
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

/// Collects endings until `wanted` have come, then for `quiet` more, and returns them all.
async fn collect(endings: &mut Endings, wanted: usize, quiet: Duration) -> Vec<Ended> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + SOON * 2;
    while seen.len() < wanted {
        assert!(Instant::now() < deadline, "only {seen:?} came");
        match next(endings, SOON).await {
            Some(Event::Ended(ended)) => seen.push(ended),
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    while let Some(event) = next(endings, quiet).await {
        match event {
            Event::Ended(ended) => seen.push(ended),
            other => panic!("unexpected {other:?}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_ending_is_reported_once_with_its_user_and_reason() {
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut sessions = sessions(&gateway).await;
    let (mut endings, _) = watch(&mut sessions, "").await;

    let long = Duration::from_secs(600);
    let expiring = create(&mut sessions, "user-expire", Duration::from_millis(300)).await;
    let deleted = create(&mut sessions, "user-delete", long).await;
    let rotated = create(&mut sessions, "user-rotate", long).await;
    let revoked_a = create(&mut sessions, "user-revoke", long).await;
    let revoked_b = create(&mut sessions, "user-revoke", long).await;
    let bystander = create(&mut sessions, "user-bystander", long).await;

    delete(&mut sessions, &deleted.session_id).await;
    let renamed = sessions
        .rotate(pb::SessionRotateRequest {
            session_id: rotated.session_id.clone(),
        })
        .await
        .expect("rotate")
        .into_inner();
    let revoked = sessions
        .delete_by_user(pb::SessionDeleteByUserRequest {
            user_id: "user-revoke".into(),
        })
        .await
        .expect("delete by user")
        .into_inner()
        .deleted;
    assert_eq!(revoked, 2);

    let seen = collect(&mut endings, 5, Duration::from_secs(3)).await;
    let by_id: HashMap<&str, &Ended> = seen
        .iter()
        .map(|ended| (ended.session_id.as_str(), ended))
        .collect();
    assert_eq!(by_id.len(), seen.len(), "an ending came twice: {seen:?}");
    assert_eq!(seen.len(), 5, "{seen:?}");
    let expect = |session: &pb::SessionInfo, reason: Reason| {
        let ended = by_id
            .get(session.session_id.as_str())
            .unwrap_or_else(|| panic!("no ending for {session:?} in {seen:?}"));
        assert_eq!(ended.user_id, session.user_id);
        assert_eq!(ended.reason(), reason, "{ended:?}");
        assert!(!ended.cursor.is_empty());
        *ended
    };
    let expired = expect(&expiring, Reason::Expired);
    // An expiry is reported as of the session's deadline.
    assert_eq!(millis(&expired.ended_at), millis(&expiring.expires_at));
    expect(&deleted, Reason::Deleted);
    expect(&rotated, Reason::Rotated);
    expect(&revoked_a, Reason::Revoked);
    expect(&revoked_b, Reason::Revoked);
    assert!(!by_id.contains_key(renamed.session_id.as_str()));
    assert!(!by_id.contains_key(bystander.session_id.as_str()));
    // Cursors grow along the stream.
    let cursors: Vec<(u64, u64)> = seen
        .iter()
        .map(|ended| {
            let (ms, seq) = ended.cursor.split_once('-').unwrap();
            (ms.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert!(
        cursors.windows(2).all(|pair| pair[0] < pair[1]),
        "{cursors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_is_reported_within_the_sweep_bound() {
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut sessions = sessions(&gateway).await;
    let (mut endings, _) = watch(&mut sessions, "").await;
    for round in 0..3 {
        let session = create(
            &mut sessions,
            &format!("user-{round}"),
            Duration::from_millis(300),
        )
        .await;
        let ended = next_ended(&mut endings).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert_eq!(ended.session_id, session.session_id);
        assert_eq!(ended.reason(), Reason::Expired);
        let late = now - millis(&session.expires_at);
        // Sweep interval (1 s) + jitter (0.25 s), with room for a loaded machine.
        assert!(late < 3_000, "reported {late} ms after the deadline");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_replays_missed_endings_in_order_once() {
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut sessions = sessions(&gateway).await;
    let (mut first, start) = watch(&mut sessions, "").await;
    let long = Duration::from_secs(600);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create(&mut sessions, "user-resume", long).await.session_id);
    }
    for id in &ids[..3] {
        delete(&mut sessions, id).await;
        // Distinct end times, so the stream's order is the order of the calls.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(next_ended(&mut first).await);
    }
    let live_ids: Vec<&str> = live.iter().map(|ended| ended.session_id.as_str()).collect();
    assert_eq!(
        live_ids,
        ids[..3].iter().map(String::as_str).collect::<Vec<_>>()
    );

    // A client that left right after `subscribed` resumes: the three, in order, then live.
    let (mut resumed, _) = watch(&mut sessions, &start).await;
    for expected in &live {
        let replayed = next_ended(&mut resumed).await;
        assert_eq!(&replayed, expected);
    }
    delete(&mut sessions, &ids[3]).await;
    let fourth = next_ended(&mut resumed).await;
    assert_eq!(fourth.session_id, ids[3]);
    assert_eq!(fourth.reason(), Reason::Deleted);
    assert_eq!(next(&mut resumed, Duration::from_secs(2)).await, None);

    // Resuming from the middle replays only what came after.
    let (mut middle, _) = watch(&mut sessions, &live[1].cursor).await;
    assert_eq!(next_ended(&mut middle).await.session_id, ids[2]);
    assert_eq!(next_ended(&mut middle).await.session_id, ids[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_put_each_ending_in_the_stream_once() {
    let redis = common::private_redis();
    let one = Gateway::start(&redis.url(), &[]).await;
    let two = Gateway::start(&redis.url(), &[]).await;
    let mut via_one = sessions(&one).await;
    let mut via_two = sessions(&two).await;
    let (mut endings, _) = watch(&mut via_one, "").await;
    let mut expected = Vec::new();
    for n in 0..6 {
        let client = if n % 2 == 0 {
            &mut via_one
        } else {
            &mut via_two
        };
        let session = create(client, &format!("user-{n}"), Duration::from_millis(300)).await;
        expected.push(session.session_id);
    }
    for n in 0..4 {
        let client = if n % 2 == 0 {
            &mut via_two
        } else {
            &mut via_one
        };
        let session = create(client, &format!("user-d{n}"), Duration::from_secs(600)).await;
        delete(client, &session.session_id).await;
        expected.push(session.session_id);
    }
    let seen = collect(&mut endings, expected.len(), Duration::from_secs(3)).await;
    assert_eq!(seen.len(), expected.len(), "{seen:?}");

    // The stream itself holds each ending once.
    let admin = redis.client().await;
    let entries: Value = admin
        .custom(fred::cmd!("XRANGE"), vec!["__gw:session:endings", "-", "+"])
        .await
        .unwrap();
    let text = format!("{entries:?}");
    for id in &expected {
        assert_eq!(text.matches(id.as_str()).count(), 1, "{id} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_leave_the_index_with_nobody_watching() {
    let redis = common::private_redis();
    let gateway = Gateway::start(&redis.url(), &[]).await;
    let mut sessions = sessions(&gateway).await;
    let user = unique_key("idle-user");
    create(&mut sessions, &user, Duration::from_millis(200)).await;
    let deadline = Instant::now() + SOON;
    loop {
        let mut indexes = redis.keys("__gw:sessions:{*").await;
        indexes.extend(redis.keys("__gw:session-ended:{*").await);
        if indexes.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still indexed: {indexes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The ending went to the stream for clients that resume.
    let length: i64 = redis
        .client()
        .await
        .custom(fred::cmd!("XLEN"), vec!["__gw:session:endings"])
        .await
        .unwrap();
    assert_eq!(length, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_resume_cursor_is_invalid_argument_naming_the_field() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut sessions = sessions(&gateway).await;
    for bad in ["x", "1-", "-1", "12"] {
        let result = sessions
            .watch_ended(pb::SessionWatchEndedRequest {
                resume_after: bad.into(),
            })
            .await;
        assert_status(result, Code::InvalidArgument, "resume_after");
    }
}

/// The due index's settle step never loses a deadline marked while a bucket was being swept:
/// the sweep read the bucket's generation before it began, and a mark since then (even one
/// whose later deadline left the score alone) means the score may only be lowered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_marked_during_a_sweep_survives_the_settle() {
    let redis = common::private_redis();
    let admin = redis.client().await;
    let script = include_str!("../src/redis/lua/session_due.lua");
    let keys = vec!["__gw:session-due:{due}", "__gw:session-due-gen:{due}"];
    let bucket = "__gw:sessions:{abcd}";
    let run = |args: Vec<&str>| {
        let admin = admin.clone();
        let keys = keys.clone();
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let mut command: Vec<String> = vec![script.to_owned(), "2".into()];
            command.extend(keys.iter().map(|key| (*key).to_owned()));
            command.extend(args);
            admin
                .custom::<Value, _>(fred::cmd!("EVAL"), command)
                .await
                .unwrap()
        }
    };
    let score = || {
        let admin = admin.clone();
        async move {
            admin
                .custom::<Option<String>, _>(
                    fred::cmd!("ZSCORE"),
                    vec!["__gw:session-due:{due}", bucket],
                )
                .await
                .unwrap()
        }
    };
    // A bucket due at 100; the sweeper reads generation 1 and starts.
    run(vec!["mark", bucket, "100"]).await;
    let generation: String = admin
        .custom(
            fred::cmd!("HGET"),
            vec!["__gw:session-due-gen:{due}", bucket],
        )
        .await
        .unwrap();
    assert_eq!(generation, "1");
    // A Create lands during the sweep: its deadline (5000) is later than the score.
    run(vec!["mark", bucket, "5000"]).await;
    assert_eq!(score().await.as_deref(), Some("100"));
    // The sweep found the bucket empty before that Create: it must not drop the bucket.
    run(vec!["settle", bucket, &generation, ""]).await;
    assert_eq!(score().await.as_deref(), Some("100"));
    // Nor raise it past a marked deadline.
    run(vec!["settle", bucket, &generation, "9000"]).await;
    assert_eq!(score().await.as_deref(), Some("100"));
    // The next sweep, with no mark in between, sets it exactly (later, too) or drops it.
    run(vec!["settle", bucket, "2", "5000"]).await;
    assert_eq!(score().await.as_deref(), Some("5000"));
    run(vec!["settle", bucket, "2", ""]).await;
    assert_eq!(score().await, None);
}
