//! A Python client drives the gateway: `tests/python/client_flows.py` generates its stubs from
//! proto/ with grpcio-tools at run time and runs the old Python helper's KeyValue, Hash and
//! Session flows, and the Lock flows, through them, so the contract is checked by another
//! language's generated code.
//!
//! grpcio and grpcio-tools come from `.tools/pip`, where `scripts/install-deps.sh test` (run by
//! `make test`) installs them; this test puts that directory on PYTHONPATH.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{Gateway, shared_redis};
use tokio::process::Command;

/// How long the whole Python run may take (stub generation included) before it is killed.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(180);

/// The repository's root.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `python3` with `.tools/pip` in front of any PYTHONPATH the caller has.
fn python3() -> Command {
    let mut paths: Vec<PathBuf> = vec![repo().join(".tools/pip")];
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    let pythonpath: OsString = std::env::join_paths(paths).expect("PYTHONPATH entries");
    let mut command = Command::new("python3");
    command
        .current_dir(repo())
        .env("PYTHONPATH", pythonpath)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    command
}

/// Runs `command` to completion within [`PYTHON_TIMEOUT`].
async fn run(mut command: Command, what: &str) -> Output {
    let output = command.output();
    match tokio::time::timeout(PYTHON_TIMEOUT, output).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => panic!("cannot run python3 for {what} ({err}): run `make test`"),
        Err(_) => panic!("{what} did not finish within {PYTHON_TIMEOUT:?}"),
    }
}

/// stdout and stderr of a finished process, for a failure message.
fn printed(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn a_python_client_generated_from_the_protos_runs_the_helper_flows() {
    let mut probe = python3();
    probe.args(["-c", "import grpc, grpc_tools.protoc"]);
    let importable = run(probe, "the grpcio import check").await;
    assert!(
        importable.status.success(),
        "grpcio / grpcio-tools are not importable from {}: run `make test` (or \
         `scripts/install-deps.sh test`), which installs them there\n{}",
        repo().join(".tools/pip").display(),
        printed(&importable)
    );

    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut flows = python3();
    flows
        .arg(repo().join("tests/python/client_flows.py"))
        .arg(gateway.addr.to_string());
    let output = run(flows, "tests/python/client_flows.py").await;
    assert!(
        output.status.success(),
        "tests/python/client_flows.py {} exited with {}\n{}",
        gateway.addr,
        output.status,
        printed(&output)
    );
    // Shown with `--nocapture`: one line per flow.
    print!("{}", String::from_utf8_lossy(&output.stdout));
}
