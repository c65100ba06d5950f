//! Session service behaviour against a real redis-server: the old helper's create / get /
//! update flow, sliding and absolute expiry with short real timeouts, rotation (also racing an
//! update), optimistic concurrency, concurrent updates, the per-user index, revocation, bad
//! input, and the session keys' place in the reserved key space.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Gateway, assert_status, duration, shared_redis, start_with, unique_key};
use fred::prelude::*;
use redis_gateway::pb;
use redis_gateway::pb::session_client::SessionClient;
use tonic::Code;
use tonic::transport::Channel;

type Sessions = SessionClient<Channel>;

async fn start() -> (Gateway, Sessions) {
    let (gateway, _) = start_with(&[]).await;
    let sessions = SessionClient::new(gateway.channel().await);
    (gateway, sessions)
}

fn data(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn millis(timestamp: &Option<prost_types::Timestamp>) -> i64 {
    let timestamp = timestamp.as_ref().expect("timestamp set");
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

async fn create(
    sessions: &mut Sessions,
    user: &str,
    pairs: &[(&str, &str)],
    idle: Option<Duration>,
    absolute: Option<Duration>,
) -> pb::SessionInfo {
    sessions
        .create(pb::SessionCreateRequest {
            user_id: user.to_owned(),
            data: data(pairs),
            idle_timeout: idle.map(duration),
            absolute_timeout: absolute.map(duration),
        })
        .await
        .expect("create")
        .into_inner()
}

async fn get(
    sessions: &mut Sessions,
    id: &str,
    touch: bool,
) -> Result<pb::SessionInfo, tonic::Status> {
    sessions
        .get(pb::SessionGetRequest {
            session_id: id.to_owned(),
            touch,
        })
        .await
        .map(tonic::Response::into_inner)
}

fn update_request(id: &str, set: &[(&str, &str)], remove: &[&str]) -> pb::SessionUpdateRequest {
    pb::SessionUpdateRequest {
        session_id: id.to_owned(),
        set: data(set),
        remove: remove.iter().map(|name| (*name).to_owned()).collect(),
        expected_version: None,
    }
}

/// The Redis key of session `id` (no namespace).
fn session_key(id: &str) -> String {
    format!("__gw:session:{{{}}}:{id}", &id[..4])
}

/// Waits until Get of `id` is NOT_FOUND, failing after `within`.
async fn wait_until_gone(sessions: &mut Sessions, id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match get(sessions, id, false).await {
            Err(status) if status.code() == Code::NotFound => return,
            Err(status) => panic!("unexpected {status:?}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "session {id} outlived {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn create_get_update_flow_of_the_old_helper() {
    let (_gateway, mut sessions) = start().await;
    let user = unique_key("user");
    let created = create(
        &mut sessions,
        &user,
        &[("role", "admin"), ("theme", "dark")],
        None,
        None,
    )
    .await;
    assert_eq!(created.user_id, user);
    assert_eq!(created.version, 1);
    assert_eq!(created.session_id.len(), 36);
    // Default idle timeout: 30 minutes from creation.
    let idle = millis(&created.expires_at) - millis(&created.created_at);
    assert_eq!(idle, 30 * 60 * 1000);

    let read = get(&mut sessions, &created.session_id, false)
        .await
        .unwrap();
    assert_eq!(read.data, data(&[("role", "admin"), ("theme", "dark")]));

    let updated = sessions
        .update(update_request(
            &created.session_id,
            &[("theme", "light"), ("cart", "3")],
            &["role"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.data, data(&[("theme", "light"), ("cart", "3")]));
    assert_eq!(updated.version, 2);
    let read = get(&mut sessions, &created.session_id, true).await.unwrap();
    assert_eq!(read.data, updated.data);

    // Data named like metadata stays data.
    let spoof = sessions
        .update(update_request(
            &created.session_id,
            &[("user_id", "mallory")],
            &[],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spoof.user_id, user);
    assert_eq!(spoof.data["user_id"], "mallory");

    assert!(
        sessions
            .delete(pb::SessionDeleteRequest {
                session_id: created.session_id.clone()
            })
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
    assert_eq!(
        get(&mut sessions, &created.session_id, false)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert!(
        !sessions
            .delete(pb::SessionDeleteRequest {
                session_id: created.session_id
            })
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
}

#[tokio::test]
async fn an_idle_session_expires_and_an_update_never_recreates_it() {
    let (_gateway, mut sessions) = start().await;
    let user = unique_key("user");
    let session = create(
        &mut sessions,
        &user,
        &[("k", "v")],
        Some(Duration::from_millis(300)),
        None,
    )
    .await;
    wait_until_gone(&mut sessions, &session.session_id, Duration::from_secs(10)).await;
    let status = sessions
        .update(update_request(&session.session_id, &[("k", "again")], &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let touch = sessions
        .touch(pb::SessionTouchRequest {
            session_id: session.session_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(touch.code(), Code::NotFound);
    let exists: i64 = shared_redis()
        .client()
        .await
        .exists(session_key(&session.session_id))
        .await
        .unwrap();
    assert_eq!(exists, 0, "an update recreated an expired session");
}

#[tokio::test]
async fn touch_slides_the_idle_expiry_and_the_absolute_cap_holds() {
    let (_gateway, mut sessions) = start().await;
    let user = unique_key("user");
    let session = create(
        &mut sessions,
        &user,
        &[],
        Some(Duration::from_secs(60)),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let touched = sessions
        .touch(pb::SessionTouchRequest {
            session_id: session.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(millis(&touched.expires_at) > millis(&session.expires_at));
    let read = get(&mut sessions, &session.session_id, false)
        .await
        .unwrap();
    assert_eq!(read.expires_at, touched.expires_at);
    assert!(millis(&read.last_accessed_at) > millis(&read.created_at));

    // An absolute cap of 1 s wins over a 60 s idle timeout, touches or not.
    let capped = create(
        &mut sessions,
        &user,
        &[],
        Some(Duration::from_secs(60)),
        Some(Duration::from_secs(1)),
    )
    .await;
    let cap = millis(&capped.created_at) + 1000;
    assert_eq!(millis(&capped.expires_at), cap);
    let touched = sessions
        .touch(pb::SessionTouchRequest {
            session_id: capped.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(millis(&touched.expires_at), cap);
    wait_until_gone(&mut sessions, &capped.session_id, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn rotate_keeps_the_session_under_a_fresh_id_and_kills_the_old_one() {
    let (_gateway, mut sessions) = start().await;
    let user = unique_key("user");
    let old = create(
        &mut sessions,
        &user,
        &[("cart", "3")],
        None,
        Some(Duration::from_secs(3600)),
    )
    .await;
    let rotated = sessions
        .rotate(pb::SessionRotateRequest {
            session_id: old.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.session_id, old.session_id);
    assert_eq!(rotated.user_id, user);
    assert_eq!(rotated.data, old.data);
    assert_eq!(rotated.created_at, old.created_at);
    assert_eq!(rotated.version, old.version + 1);
    // The absolute deadline carries over: the cap is still creation + 1 h.
    assert!(millis(&rotated.expires_at) <= millis(&old.created_at) + 3_600_000);
    assert_eq!(
        get(&mut sessions, &old.session_id, false)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let listed = sessions
        .list_by_user(pb::SessionListByUserRequest {
            user_id: user.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed
        .sessions
        .iter()
        .map(|s| s.session_id.as_str())
        .collect();
    assert_eq!(ids, vec![rotated.session_id.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_racing_a_rotation_is_carried_over_or_not_found_never_lost() {
    let (gateway, mut sessions) = start().await;
    for round in 0..20 {
        let user = unique_key("user");
        let old = create(&mut sessions, &user, &[], None, None).await;
        let mut updater = SessionClient::new(gateway.channel().await);
        let id = old.session_id.clone();
        let update = tokio::spawn(async move {
            updater
                .update(update_request(&id, &[("flag", "set")], &[]))
                .await
        });
        let rotated = sessions
            .rotate(pb::SessionRotateRequest {
                session_id: old.session_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let updated = update.await.unwrap();
        let now = get(&mut sessions, &rotated.session_id, false)
            .await
            .unwrap();
        match updated {
            Ok(_) => assert_eq!(
                now.data.get("flag").map(String::as_str),
                Some("set"),
                "round {round}: an applied update was lost by the rotation"
            ),
            Err(status) => {
                assert_eq!(status.code(), Code::NotFound, "round {round}: {status:?}");
                assert!(
                    now.data.is_empty(),
                    "round {round}: a refused update landed"
                );
            }
        }
    }
}

#[tokio::test]
async fn expected_version_guards_read_modify_write() {
    let (_gateway, mut sessions) = start().await;
    let session = create(
        &mut sessions,
        &unique_key("user"),
        &[("n", "1")],
        None,
        None,
    )
    .await;
    let mut first = update_request(&session.session_id, &[("n", "2")], &[]);
    first.expected_version = Some(1);
    assert_eq!(
        sessions.update(first).await.unwrap().into_inner().version,
        2
    );
    let mut stale = update_request(&session.session_id, &[("n", "3")], &[]);
    stale.expected_version = Some(1);
    let status = sessions.update(stale).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("version 2"),
        "{}",
        status.message()
    );
    assert_eq!(
        get(&mut sessions, &session.session_id, false)
            .await
            .unwrap()
            .data["n"],
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_different_fields_lose_none() {
    let (gateway, mut sessions) = start().await;
    let session = create(&mut sessions, &unique_key("user"), &[], None, None).await;
    let mut tasks = Vec::new();
    for index in 0..16 {
        let mut client = SessionClient::new(gateway.channel().await);
        let id = session.session_id.clone();
        tasks.push(tokio::spawn(async move {
            let field = format!("field{index}");
            client
                .update(update_request(&id, &[(field.as_str(), "x")], &[]))
                .await
                .expect("update");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let read = get(&mut sessions, &session.session_id, false)
        .await
        .unwrap();
    assert_eq!(read.data.len(), 16, "{:?}", read.data);
    assert_eq!(read.version, 17);
}

#[tokio::test]
async fn list_by_user_shows_only_live_sessions_and_delete_by_user_spares_others() {
    let (_gateway, mut sessions) = start().await;
    let user = unique_key("user");
    let other = unique_key("other");
    let short = create(
        &mut sessions,
        &user,
        &[],
        Some(Duration::from_millis(200)),
        None,
    )
    .await;
    let long_a = create(&mut sessions, &user, &[("device", "phone")], None, None).await;
    let long_b = create(&mut sessions, &user, &[("device", "laptop")], None, None).await;
    let others = create(&mut sessions, &other, &[], None, None).await;
    wait_until_gone(&mut sessions, &short.session_id, Duration::from_secs(10)).await;
    let listed = sessions
        .list_by_user(pb::SessionListByUserRequest {
            user_id: user.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<String> = listed.sessions.into_iter().map(|s| s.session_id).collect();
    ids.sort();
    let mut expected = vec![long_a.session_id.clone(), long_b.session_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    let deleted = sessions
        .delete_by_user(pb::SessionDeleteByUserRequest {
            user_id: user.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 2);
    for id in [&long_a.session_id, &long_b.session_id] {
        assert_eq!(
            get(&mut sessions, id, false).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    assert!(get(&mut sessions, &others.session_id, false).await.is_ok());
    let empty = sessions
        .list_by_user(pb::SessionListByUserRequest { user_id: user })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.sessions.is_empty());
}

#[tokio::test]
async fn session_keys_are_out_of_reach_of_key_value_callers() {
    let (gateway, mut sessions) = start().await;
    let session = create(
        &mut sessions,
        &unique_key("user"),
        &[("secret", "s")],
        None,
        None,
    )
    .await;
    let mut kv = gateway.kv().await;
    let status = kv
        .get(pb::KeyValueGetRequest {
            key: session_key(&session.session_id),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut stream = kv
        .scan(pb::KeyValueScanRequest {
            pattern: "*".into(),
            page_size: 0,
            r#type: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(page) = stream.message().await.unwrap() {
        assert!(
            page.keys
                .iter()
                .all(|key| !key.contains(&session.session_id))
        );
    }
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let (gateway, _) = start_with(&["--max-value-bytes", "16", "--max-ttl", "1h"]).await;
    let mut sessions = SessionClient::new(gateway.channel().await);
    let create_with = |user: &str, pairs: &[(&str, &str)], idle: Option<prost_types::Duration>| {
        pb::SessionCreateRequest {
            user_id: user.to_owned(),
            data: data(pairs),
            idle_timeout: idle,
            absolute_timeout: None,
        }
    };
    assert_status(
        sessions.create(create_with("", &[], None)).await,
        Code::InvalidArgument,
        "user_id",
    );
    assert_status(
        sessions.create(create_with("a\nb", &[], None)).await,
        Code::InvalidArgument,
        "user_id",
    );
    assert_status(
        sessions
            .create(create_with("u", &[("k", "seventeen bytes!!")], None))
            .await,
        Code::InvalidArgument,
        "data[k]",
    );
    let zero = Some(prost_types::Duration {
        seconds: 0,
        nanos: 0,
    });
    assert_status(
        sessions.create(create_with("u", &[], zero)).await,
        Code::InvalidArgument,
        "idle_timeout",
    );
    let over = Some(duration(Duration::from_secs(7200)));
    assert_status(
        sessions.create(create_with("u", &[], over)).await,
        Code::InvalidArgument,
        "idle_timeout",
    );
    for bad_id in [
        "",
        "session_u_1764110000",
        "zzzz0123456789012345678901234567890",
        "../../etc/passwd",
    ] {
        assert_status(
            get(&mut sessions, bad_id, false).await,
            Code::InvalidArgument,
            "session_id",
        );
        assert_status(
            sessions
                .rotate(pb::SessionRotateRequest {
                    session_id: bad_id.into(),
                })
                .await,
            Code::InvalidArgument,
            "session_id",
        );
    }
    let session = create(&mut sessions, "u", &[], None, None).await;
    assert_status(
        sessions
            .update(update_request(&session.session_id, &[], &[""]))
            .await,
        Code::InvalidArgument,
        "remove[0]",
    );
    assert_status(
        sessions
            .list_by_user(pb::SessionListByUserRequest {
                user_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "user_id",
    );
}

#[tokio::test]
async fn health_reports_the_hash_and_session_services() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let (gateway, _) = start().await;
    for service in ["redisgateway.v1.Hash", "redisgateway.v1.Session"] {
        assert_eq!(
            gateway.health_status(service).await,
            ServingStatus::Serving,
            "{service}"
        );
    }
}
