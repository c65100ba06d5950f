//! Calling the gateway from Rust: the `redis-gateway` crate exports the generated client types
//! (`redis_gateway::pb::*_client`), so a Rust service depends on it as its client library.
//!
//! ```text
//! make run                                   # a gateway on 127.0.0.1:50051
//! cargo run --example client                 # or: cargo run --example client -- http://host:50051
//! GATEWAY_TOKEN=secret GATEWAY_CA=ca.pem cargo run --example client -- https://gateway:50051
//! ```
//!
//! It caches a value with a TTL, counts with Increment, and takes a lock for a piece of work
//! (the fencing token goes with every write the work makes), each call with a deadline.

use std::time::Duration;

use redis_gateway::pb;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::lock_client::LockClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// What every call sends: a deadline and, when the gateway requires one, the bearer token.
#[derive(Clone)]
struct CallOptions {
    deadline: Duration,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl CallOptions {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }
}

fn duration(value: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: value.as_secs() as i64,
        nanos: value.subsec_nanos() as i32,
    }
}

/// Runs the example against the gateway at `address` (`http://`, or `https://` trusting the
/// CA certificate in the PEM file `ca`), sending `token` when given.
pub async fn run(
    address: &str,
    ca: Option<&str>,
    token: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut endpoint = Channel::from_shared(address.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30));
    if address.starts_with("https://") {
        let ca = ca.ok_or("an https:// address needs GATEWAY_CA (the CA's PEM file)")?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
        endpoint = endpoint.tls_config(tls)?;
    }
    // One channel (one HTTP/2 connection) serves every client and call; clone it freely.
    let channel = endpoint.connect().await?;
    let options = CallOptions {
        deadline: Duration::from_secs(2),
        token: token
            .map(|token| format!("Bearer {token}").parse())
            .transpose()?,
    };
    let mut kv = KeyValueClient::new(channel.clone());
    let mut locks = LockClient::new(channel);

    // A cached task result that expires by itself.
    kv.set(options.request(pb::KeyValueSetRequest {
        key: "task:42:result".into(),
        value: "done: 17 rows".into(),
        ttl: Some(duration(Duration::from_secs(60))),
        ..Default::default()
    }))
    .await?;
    let cached = kv
        .get(options.request(pb::KeyValueGetRequest {
            key: "task:42:result".into(),
            include_ttl: true,
            ..Default::default()
        }))
        .await?
        .into_inner();
    println!(
        "cached: found={} value={:?} ttl={:?}",
        cached.found,
        String::from_utf8_lossy(&cached.value),
        cached.ttl
    );
    if !cached.found || cached.value.as_ref() != b"done: 17 rows" {
        return Err("the cached value did not read back".into());
    }

    // A counter: exact under any concurrency (one Redis INCRBY).
    let count = kv
        .increment(options.request(pb::KeyValueIncrementRequest {
            key: "example:runs".into(),
            delta: 1,
            ..Default::default()
        }))
        .await?
        .into_inner()
        .value;
    println!("this example ran {count} time(s)");

    // A lock around a piece of work; wait up to 1 s for it.
    let lock = locks
        .acquire(options.request(pb::LockAcquireRequest {
            name: "example:report".into(),
            ttl: Some(duration(Duration::from_secs(10))),
            wait_timeout: Some(duration(Duration::from_secs(1))),
            owner: format!("example pid {}", std::process::id()),
            ..Default::default()
        }))
        .await?
        .into_inner();
    if !lock.acquired {
        return Err("the lock stayed busy".into());
    }
    println!("lock taken, fencing token {}", lock.fencing_token);
    // ... the work, passing `lock.fencing_token` to whatever it writes ...
    let released = locks
        .release(options.request(pb::LockReleaseRequest {
            name: "example:report".into(),
            token: lock.token,
        }))
        .await?
        .into_inner()
        .released;
    println!("lock released: {released}");
    if !released {
        return Err("the lock was not ours any more".into());
    }
    Ok(())
}

#[allow(dead_code)] // Also compiled into tests/rust_example.rs, which calls `run` only.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let ca = std::env::var("GATEWAY_CA").ok();
    let token = std::env::var("GATEWAY_TOKEN").ok();
    run(&address, ca.as_deref(), token.as_deref()).await
}
