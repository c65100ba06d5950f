//! Bearer tokens, permissions and tenant namespaces (GATEWAY_AUTH_FILE): no token or a wrong
//! one is UNAUTHENTICATED on unary calls and streams alike, while health stays open; each RPC
//! needs its permission; a tenant cannot read, write, scan, lock, watch or delete another's
//! keys, whatever keys or patterns it crafts; the file is re-read when it changes.

mod common;

use common::requests::{get, set};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, RedisServer, unique_key};
use redis_gateway::pb;
use redis_gateway::pb::hash_client::HashClient;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::key_value_watch_expirations_response::Event;
use redis_gateway::pb::lock_client::LockClient;
use redis_gateway::pb::monitor_client::MonitorClient;
use redis_gateway::pb::session_client::SessionClient;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;

const ADMIN: &str = "token-admin";
const TENANT_A: &str = "token-tenant-a";
const TENANT_B: &str = "token-tenant-b";
const READER_A: &str = "token-reader-a";

fn entry(name: &str, token: &str, namespace: &str, permissions: &str) -> String {
    let digest: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "[[client]]\nname = \"{name}\"\ntoken_sha256 = \"{digest}\"\nnamespace = \"{namespace}\"\n\
         permissions = [{permissions}]\n\n"
    )
}

fn clients() -> String {
    let tenant = "\"read\", \"write\", \"lock\", \"session\", \"watch\"";
    [
        entry("ops", ADMIN, "", "\"admin\""),
        entry("tenant-a", TENANT_A, "tenant-a", tenant),
        entry("tenant-b", TENANT_B, "tenant-b", tenant),
        entry("reader-a", READER_A, "tenant-a", "\"read\""),
    ]
    .concat()
}

/// A message with `authorization: Bearer <token>`.
fn as_client<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    request
}

struct Setup {
    _redis: RedisServer,
    _dir: tempfile::TempDir,
    gateway: Gateway,
}

impl Setup {
    async fn start() -> Self {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("clients.toml");
        std::fs::write(&file, clients()).expect("write the auth file");
        let gateway = Gateway::start(
            &redis.url(),
            &["--auth-file", file.to_str().expect("a UTF-8 path")],
        )
        .await;
        Self {
            _redis: redis,
            _dir: dir,
            gateway,
        }
    }

    fn file(&self) -> std::path::PathBuf {
        self._dir.path().join("clients.toml")
    }

    async fn kv(&self) -> KeyValueClient<Channel> {
        self.gateway.kv().await
    }
}

/// Scans `pattern` as `token`, every page.
async fn scan(kv: &mut KeyValueClient<Channel>, token: &str, pattern: &str) -> HashSet<String> {
    let mut pages = kv
        .scan(as_client(
            token,
            pb::KeyValueScanRequest {
                pattern: pattern.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("Scan")
        .into_inner();
    let mut keys = HashSet::new();
    while let Some(page) = pages.message().await.expect("a page") {
        keys.extend(page.keys);
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_calls_and_streams_are_unauthenticated_and_health_stays_open() {
    let setup = Setup::start().await;
    let mut kv = setup.kv().await;
    let no_token = kv.get(get("k")).await.expect_err("no token");
    assert_eq!(no_token.code(), Code::Unauthenticated, "{no_token:?}");
    for token in ["not-a-token", "", TENANT_A.trim_end_matches('a')] {
        let wrong = kv
            .get(as_client(token, get("k")))
            .await
            .expect_err("wrong token");
        assert_eq!(wrong.code(), Code::Unauthenticated, "{token:?}: {wrong:?}");
    }
    let mut no_scheme = Request::new(get("k"));
    no_scheme
        .metadata_mut()
        .insert("authorization", TENANT_A.parse().expect("value"));
    assert_eq!(
        kv.get(no_scheme).await.expect_err("no scheme").code(),
        Code::Unauthenticated
    );
    // Streams are checked before they open, as unary calls are.
    let watch = kv
        .watch_expirations(pb::KeyValueWatchExpirationsRequest::default())
        .await
        .expect_err("watch without a token");
    assert_eq!(watch.code(), Code::Unauthenticated);
    let hold = LockClient::new(setup.gateway.channel().await)
        .hold(pb::LockHoldRequest::default())
        .await
        .expect_err("hold without a token");
    assert_eq!(hold.code(), Code::Unauthenticated);
    // Health (and reflection) need none.
    assert_eq!(
        setup.gateway.health_status("").await,
        ServingStatus::Serving
    );
    // The right token works.
    kv.set(as_client(TENANT_A, set("k", "v")))
        .await
        .expect("Set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rpc_needs_its_permission() {
    let setup = Setup::start().await;
    let mut kv = setup.kv().await;
    let key = unique_key("perm");
    kv.set(as_client(TENANT_A, set(&key, "v")))
        .await
        .expect("a tenant writes");
    let read = kv
        .get(as_client(READER_A, get(&key)))
        .await
        .expect("a reader reads")
        .into_inner();
    assert_eq!(read.value, "v");
    let denied = |status: tonic::Status| {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("reader-a"), "{status:?}");
    };
    denied(
        kv.set(as_client(READER_A, set(&key, "w")))
            .await
            .expect_err("a reader cannot write"),
    );
    // Refreshing a TTL is a write, though Get is a read.
    denied(
        kv.get(as_client(
            READER_A,
            pb::KeyValueGetRequest {
                key: key.clone(),
                refresh_ttl: Some(common::duration(Duration::from_secs(60))),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a reader cannot refresh a TTL"),
    );
    denied(
        kv.watch_expirations(as_client(
            READER_A,
            pb::KeyValueWatchExpirationsRequest::default(),
        ))
        .await
        .expect_err("a reader cannot watch"),
    );
    let mut locks = LockClient::new(setup.gateway.channel().await);
    denied(
        locks
            .acquire(as_client(
                READER_A,
                common::locks::acquire_request("job", Duration::from_secs(5), Duration::ZERO),
            ))
            .await
            .expect_err("a reader cannot lock"),
    );
    // Server-wide monitoring is for admins; a tenant may ping.
    let mut monitor = MonitorClient::new(setup.gateway.channel().await);
    let info = monitor
        .get_info(as_client(TENANT_A, pb::MonitorGetInfoRequest::default()))
        .await
        .expect_err("a tenant cannot read INFO");
    assert_eq!(info.code(), Code::PermissionDenied);
    for token in [TENANT_A, READER_A] {
        let clients = monitor
            .get_clients(as_client(token, pb::MonitorGetClientsRequest::default()))
            .await
            .expect_err("nor the client list");
        assert_eq!(clients.code(), Code::PermissionDenied);
    }
    monitor
        .ping(as_client(TENANT_A, pb::MonitorPingRequest::default()))
        .await
        .expect("a tenant may ping");
    monitor
        .get_info(as_client(ADMIN, pb::MonitorGetInfoRequest::default()))
        .await
        .expect("an admin reads INFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_another_tenants_keys_however_it_names_them() {
    let setup = Setup::start().await;
    let mut kv = setup.kv().await;
    kv.set(as_client(TENANT_A, set("secret", "a-only")))
        .await
        .expect("Set");
    // A key that spells B's prefix stays inside A's namespace.
    kv.set(as_client(TENANT_A, set("tenant-b:planted", "a")))
        .await
        .expect("Set");
    kv.set(as_client(TENANT_B, set("own", "b")))
        .await
        .expect("Set");
    // The admin (whole keyspace) sees where they went.
    let stored = kv
        .get(as_client(ADMIN, get("tenant-a:secret")))
        .await
        .expect("Get")
        .into_inner();
    assert_eq!(stored.value, "a-only");
    let everything = scan(&mut kv, ADMIN, "*").await;
    assert!(
        everything.contains("tenant-a:tenant-b:planted"),
        "{everything:?}"
    );
    assert!(!everything.contains("tenant-b:planted"), "{everything:?}");

    for name in [
        "secret",
        "tenant-a:secret",
        "../tenant-a:secret",
        ":secret",
        "*",
        "{tenant-a}secret",
        "planted",
    ] {
        let read = kv
            .get(as_client(TENANT_B, get(name)))
            .await
            .expect("Get")
            .into_inner();
        assert!(!read.found, "tenant B read {name:?}");
    }
    for pattern in [
        "*",
        "\\*",
        "*secret*",
        "tenant-a*",
        "{b}x",
        "?*",
        "[t]*",
        "../*",
    ] {
        let keys = scan(&mut kv, TENANT_B, pattern).await;
        assert!(
            keys.iter().all(|key| key == "own"),
            "tenant B's scan of {pattern:?} saw {keys:?}"
        );
    }
    let deleted = kv
        .delete(as_client(
            TENANT_B,
            pb::KeyValueDeleteRequest {
                keys: vec!["secret".into(), "tenant-a:secret".into(), "*".into()],
            },
        ))
        .await
        .expect("Delete")
        .into_inner();
    assert_eq!(deleted.deleted, 0);
    let still = kv
        .get(as_client(TENANT_A, get("secret")))
        .await
        .expect("Get")
        .into_inner();
    assert_eq!(still.value, "a-only");

    // Hashes.
    let mut hashes = HashClient::new(setup.gateway.channel().await);
    hashes
        .set(as_client(
            TENANT_A,
            pb::HashSetRequest {
                name: "profile".into(),
                fields: [("email".to_owned(), Bytes::from_static(b"a@x"))].into(),
                ttl: None,
            },
        ))
        .await
        .expect("HSET");
    let field = hashes
        .get(as_client(
            TENANT_B,
            pb::HashGetRequest {
                name: "profile".into(),
                field: "email".into(),
            },
        ))
        .await
        .expect("HGET")
        .into_inner();
    assert!(!field.found);

    // Locks of the same name are separate locks.
    let mut locks = LockClient::new(setup.gateway.channel().await);
    let request = || common::locks::acquire_request("job", Duration::from_secs(30), Duration::ZERO);
    let a = locks
        .acquire(as_client(TENANT_A, request()))
        .await
        .expect("Acquire")
        .into_inner();
    let b = locks
        .acquire(as_client(TENANT_B, request()))
        .await
        .expect("Acquire")
        .into_inner();
    assert!(a.acquired && b.acquired, "tenant B was blocked by A's lock");

    // Sessions: B cannot read A's by id.
    let mut sessions = SessionClient::new(setup.gateway.channel().await);
    let session = sessions
        .create(as_client(
            TENANT_A,
            pb::SessionCreateRequest {
                user_id: "alice".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("Create")
        .into_inner();
    let foreign = sessions
        .get(as_client(
            TENANT_B,
            pb::SessionGetRequest {
                session_id: session.session_id.clone(),
                touch: false,
            },
        ))
        .await
        .expect_err("B cannot read A's session");
    assert_eq!(foreign.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_watches_only_its_own_expirations_named_without_the_prefix() {
    let setup = Setup::start().await;
    let mut kv = setup.kv().await;
    let watch = |token: &'static str| {
        let mut kv = kv.clone();
        async move {
            let mut events = kv
                .watch_expirations(as_client(
                    token,
                    pb::KeyValueWatchExpirationsRequest {
                        pattern: "*".into(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("WatchExpirations")
                .into_inner();
            let first = events
                .message()
                .await
                .expect("no error")
                .and_then(|m| m.event);
            assert!(matches!(first, Some(Event::Subscribed(_))), "{first:?}");
            events
        }
    };
    let mut a_events = watch(TENANT_A).await;
    let mut b_events = watch(TENANT_B).await;
    let ttl = |key: &str| pb::KeyValueSetRequest {
        ttl: Some(common::duration(Duration::from_millis(200))),
        ..set(key, "x")
    };
    kv.set(as_client(TENANT_A, ttl("a-expiring")))
        .await
        .expect("Set");
    assert_eq!(next_key(&mut a_events).await, "a-expiring");
    // B's first event is its own key, not A's.
    kv.set(as_client(TENANT_B, ttl("b-expiring")))
        .await
        .expect("Set");
    assert_eq!(next_key(&mut b_events).await, "b-expiring");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_file_is_reread_when_it_changes_and_an_invalid_one_is_ignored() {
    let setup = Setup::start().await;
    let mut kv = setup.kv().await;
    let late = "token-late";
    let refused = kv
        .get(as_client(late, get("k")))
        .await
        .expect_err("unknown yet");
    assert_eq!(refused.code(), Code::Unauthenticated);
    write_atomically(
        &setup.file(),
        &(clients() + &entry("late", late, "late", "\"read\"")),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while kv.get(as_client(late, get("k"))).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new client was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken file changes nothing: the clients stay as they were.
    write_atomically(&setup.file(), "[[client]]\nname = \"broken\"\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    kv.get(as_client(late, get("k")))
        .await
        .expect("still accepted");
    kv.get(as_client(TENANT_A, get("k")))
        .await
        .expect("still accepted");
}

/// The key of the next expiry on `events` (gaps skipped), within 10 s.
async fn next_key(events: &mut tonic::Streaming<pb::KeyValueWatchExpirationsResponse>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, events.message())
            .await
            .expect("an event within 10 s")
            .expect("no error");
        match message.and_then(|m| m.event) {
            Some(Event::Expired(expired)) => return expired.key,
            Some(Event::Gap(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Replaces `path` by a complete new file (as a secret mount does), never a half-written one.
fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

/// Random keys and patterns (glob characters, escapes, braces, delimiters, NUL, unicode) sent
/// by tenant B through the gateway to a real Redis never reach tenant A's keys.
#[test]
fn random_keys_and_patterns_of_one_tenant_never_reach_another() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let setup = runtime.block_on(Setup::start());
    let mut kv = runtime.block_on(setup.kv());
    let a_keys = ["secret", "x", "*", "{b}x", "tenant-b:y", "a\\*"];
    for key in a_keys {
        runtime
            .block_on(kv.set(as_client(TENANT_A, set(key, "a-only"))))
            .expect("Set");
    }
    runtime
        .block_on(kv.set(as_client(TENANT_B, set("own", "b"))))
        .expect("Set");
    let tricky = prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec![
                '*', '?', '[', ']', '^', '-', '\\', '{', '}', ':', '/', '.', '\0', 'a', 's', 'x',
                't', 'e', 'n', 'é',
            ]),
            1 => any::<char>(),
        ],
        1..20,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>());
    let cases = 300;
    let mut runner = TestRunner::new(Config::with_cases(cases));
    runner
        .run(&(tricky.clone(), tricky), |(pattern, key)| {
            runtime.block_on(async {
                let mut kv = kv.clone();
                // Scan: an invalid pattern may be refused, but nothing of A's ever comes back.
                if let Ok(response) = kv
                    .scan(as_client(
                        TENANT_B,
                        pb::KeyValueScanRequest {
                            pattern: pattern.clone(),
                            ..Default::default()
                        },
                    ))
                    .await
                {
                    let mut pages = response.into_inner();
                    while let Ok(Some(page)) = pages.message().await {
                        for found in page.keys {
                            prop_assert_eq!(found.as_str(), "own", "pattern {:?}", pattern);
                        }
                    }
                }
                match kv.get(as_client(TENANT_B, get(&key))).await {
                    Ok(read) => prop_assert!(
                        read.get_ref().value != "a-only",
                        "tenant B read A's value through {:?}",
                        key
                    ),
                    Err(status) => prop_assert_eq!(status.code(), Code::InvalidArgument),
                }
                Ok(())
            })
        })
        .expect("tenant B stayed in its namespace");
    // A's keys are all still there.
    for key in a_keys {
        let read = runtime
            .block_on(kv.get(as_client(TENANT_A, get(key))))
            .expect("Get")
            .into_inner();
        assert_eq!(read.value, "a-only", "{key}");
    }
    println!("{cases} random patterns and keys of tenant B tried against a real Redis");
    drop(kv);
    drop(setup);
    runtime.shutdown_timeout(Duration::from_secs(5));
}
