//! Other programs a test runs to completion — the Python and Node.js clients, their installers —
//! with a time limit, and their output for a failure message.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// The repository's root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `python3` in the repository's root with `.tools/pip` (where `make test` installs grpcio and
/// grpcio-tools) in front of any PYTHONPATH the caller has.
pub fn python3() -> Command {
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

/// Runs `command` (described as `what`) to completion within `timeout`; the child is killed
/// when the time runs out.
pub async fn run_within(mut command: Command, what: &str, timeout: Duration) -> Output {
    command.kill_on_drop(true);
    match tokio::time::timeout(timeout, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => panic!("cannot run {what} ({err}): run `make test`, which installs it"),
        Err(_) => panic!("{what} did not finish within {timeout:?}"),
    }
}

/// stdout and stderr of a finished process, for a failure message.
pub fn printed(output: &Output) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fails the test, naming the fix, when grpcio or grpcio-tools cannot be imported.
pub async fn require_grpcio() {
    let mut probe = python3();
    probe.args(["-c", "import grpc, grpc_tools.protoc"]);
    let importable = run_within(probe, "the grpcio import check", Duration::from_secs(60)).await;
    assert!(
        importable.status.success(),
        "grpcio / grpcio-tools are not importable from {}: run `make test` (or \
         `scripts/install-deps.sh test`), which installs them there\n{}",
        repo().join(".tools/pip").display(),
        printed(&importable)
    );
}
