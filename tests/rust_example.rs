//! `examples/client.rs`, the Rust client example, runs against a live gateway: with no auth,
//! and with an auth file and the example's bearer token.

mod common;

#[path = "../examples/client.rs"]
mod example;

use common::{Gateway, shared_redis};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn the_rust_client_example_runs_against_a_gateway() {
    let gateway = Gateway::start(&shared_redis().url(), &[]).await;
    example::run(&format!("http://{}", gateway.addr), None, None)
        .await
        .expect("the example runs");
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_rust_client_example_sends_its_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth_file = dir.path().join("clients.toml");
    let digest = hex(&Sha256::digest(b"example-token"));
    std::fs::write(
        &auth_file,
        format!(
            "[[client]]\nname = \"example\"\ntoken_sha256 = \"{digest}\"\nnamespace = \"example\"\n\
             permissions = [\"read\", \"write\", \"lock\"]\n"
        ),
    )
    .expect("write the auth file");
    let auth = auth_file.display().to_string();
    let gateway = Gateway::start(&shared_redis().url(), &["--auth-file", &auth]).await;
    let address = format!("http://{}", gateway.addr);
    let refused = example::run(&address, None, None).await;
    assert!(refused.is_err(), "served without a token");
    example::run(&address, None, Some("example-token"))
        .await
        .expect("the example runs with its token");
    gateway.stop().await.expect("clean stop");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
