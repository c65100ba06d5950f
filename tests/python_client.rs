//! A Python client drives the gateway: `tests/python/client_flows.py` generates its stubs from
//! proto/ with grpcio-tools at run time and runs the old Python helper's KeyValue, Hash and
//! Session flows, and the Lock flows, through them, so the contract is checked by another
//! language's generated code.
//!
//! grpcio and grpcio-tools come from `.tools/pip`, where `scripts/install-deps.sh test` (run by
//! `make test`) installs them; this test puts that directory on PYTHONPATH.

mod common;

use std::time::Duration;

use common::programs::{printed, python3, repo, require_grpcio, run_within};
use common::{Gateway, shared_redis};

/// How long the whole Python run may take (stub generation included) before it is killed.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn a_python_client_generated_from_the_protos_runs_the_helper_flows() {
    require_grpcio().await;
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut flows = python3();
    flows
        .arg(repo().join("tests/python/client_flows.py"))
        .arg(gateway.addr.to_string());
    let output = run_within(flows, "tests/python/client_flows.py", PYTHON_TIMEOUT).await;
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
