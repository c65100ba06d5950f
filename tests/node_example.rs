//! The Node.js example drives the gateway: `clients/node/example.js` loads proto/ at run time
//! with `@grpc/proto-loader` and runs its client's helpers (a task result cached with a TTL, a
//! lock held with Lock.Hold, expirations of `task:` keys watched) against an in-process
//! gateway, checking the outcomes itself; it exits non-zero when a check fails.
//!
//! `clients/node/install.sh` runs first: it installs Node.js and npm from Debian's packages
//! when `node` is missing, and the pinned npm dependencies (`npm ci`) when
//! `clients/node/node_modules` is missing or stale, so the first run may take a while.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::programs::{printed, run_within};
use common::{Gateway, shared_redis};
use tokio::process::Command;

/// How long `clients/node/install.sh` may take (apt-get and npm ci on a fresh machine).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the example may take; it stops itself after 60 seconds.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The Node.js client's directory.
fn client_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/node"))
}

/// Runs `command` in the client's directory to completion within `timeout`.
async fn run(mut command: Command, what: &str, timeout: Duration) -> Output {
    command.current_dir(client_dir());
    run_within(command, what, timeout).await
}

#[tokio::test]
async fn the_node_example_caches_holds_a_lock_and_watches_expirations() {
    let install = run(
        Command::new(client_dir().join("install.sh")),
        "clients/node/install.sh",
        INSTALL_TIMEOUT,
    )
    .await;
    assert!(
        install.status.success(),
        "clients/node/install.sh exited with {}\n{}",
        install.status,
        printed(&install)
    );

    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    let mut example = Command::new("node");
    example
        .arg("example.js")
        .arg(gateway.addr.to_string())
        .env_remove("REDIS_GATEWAY_TOKEN");
    let output = run(example, "node clients/node/example.js", EXAMPLE_TIMEOUT).await;
    assert!(
        output.status.success(),
        "node clients/node/example.js {} exited with {}\n{}",
        gateway.addr,
        output.status,
        printed(&output)
    );
    // Shown with `--nocapture`: one line per flow.
    print!("{}", String::from_utf8_lossy(&output.stdout));
}
