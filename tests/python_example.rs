//! The Python example client works against a live gateway: `clients/python/example.py` runs
//! each use case of `clients/python/redis_gateway_client.py` (task status and result cached
//! with TTLs, a session created, read, updated and deleted, `gateway_lock` over Lock.Hold
//! held exclusively and then lost, and a listener hearing a `task:` key expire and a session
//! end) and asserts every outcome itself; this test checks that it exits 0 and reports each
//! use case, and that it exits non-zero when no gateway answers.
//!
//! grpcio and grpcio-tools come from `.tools/pip`, where `scripts/install-deps.sh test` (run by
//! `make test`) installs them; this test puts that directory on PYTHONPATH. The client
//! generates its stubs from proto/ into a cache under Cargo's target tmpdir.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::programs::{self, printed, repo, require_grpcio};
use common::{Gateway, shared_redis};
use tokio::process::Command;

/// How long one run of the example (stub generation included) may take before it is killed.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(180);

/// What the example prints for each use case that passed.
const USE_CASES: [&str; 6] = [
    "ok   task cache:",
    "ok   task expiry:",
    "ok   session:",
    "ok   session ended:",
    "ok   lock:",
    "ok   lock lost:",
];

/// `python3` as [`programs::python3`] runs it, with the stub cache in Cargo's target tmpdir
/// and none of the client's settings from the caller's environment.
fn python3() -> Command {
    let mut command = programs::python3();
    command
        .env(
            "REDIS_GATEWAY_STUB_CACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-example-stubs"),
        )
        .env_remove("REDIS_GATEWAY_TOKEN")
        .env_remove("REDIS_GATEWAY_STUBS")
        .env_remove("REDIS_GATEWAY_PROTO_DIR");
    command
}

/// Runs `command` to completion within [`PYTHON_TIMEOUT`].
async fn run(command: Command, what: &str) -> Output {
    programs::run_within(command, what, PYTHON_TIMEOUT).await
}

/// `python3 clients/python/example.py <addr>`.
fn example(addr: &str) -> Command {
    let mut command = python3();
    command
        .arg(repo().join("clients/python/example.py"))
        .arg(addr);
    command
}

#[tokio::test]
async fn the_python_example_runs_every_use_case_against_a_live_gateway() {
    require_grpcio().await;
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let addr = gateway.addr.to_string();
    let started = Instant::now();
    let output = run(example(&addr), "clients/python/example.py").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "clients/python/example.py {addr} exited with {} after {:?}\n{}",
        output.status,
        started.elapsed(),
        printed(&output)
    );
    for use_case in USE_CASES {
        assert!(
            stdout.lines().any(|line| line.starts_with(use_case)),
            "the example's output has no line starting {use_case:?}\n{}",
            printed(&output)
        );
    }
    assert!(
        stdout.contains("example: 6 of 6 use cases ok"),
        "the example's summary is missing\n{}",
        printed(&output)
    );
    // Shown with `--nocapture`: one line per use case.
    print!("{stdout}");
}

#[tokio::test]
async fn the_python_example_exits_non_zero_when_no_gateway_answers() {
    require_grpcio().await;
    // A loopback port nothing listens on once the listener is dropped.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local address").to_string()
    };
    let output = run(
        example(&addr),
        "clients/python/example.py without a gateway",
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "clients/python/example.py {addr} with nothing listening should exit 1\n{}",
        printed(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("FAIL connect"),
        "the example should report the failed connection\n{}",
        printed(&output)
    );
}
