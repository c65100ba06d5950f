//! How the gateway ends client connections (GATEWAY_IDLE_TIMEOUT, GATEWAY_MAX_CONNECTION_AGE),
//! seen by a raw HTTP/2 client that reads every frame: a connection without calls is closed
//! gracefully (GOAWAY, no error) after the idle timeout; one with a call open is not, until
//! the call ends; a connection past its maximum age gets GOAWAY even with a call open; and a
//! gRPC client whose idle connection was closed simply connects again for its next call.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Gateway, shared_redis, unique_key};
use redis_gateway::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// HTTP/2 frame types the tests read or write.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
/// Frame flags.
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// The CANCEL error code of RST_STREAM.
const CANCEL: u32 = 0x8;

/// A raw HTTP/2 client connection: it answers the server's SETTINGS and PINGs and records
/// what else arrives.
struct RawHttp2 {
    stream: TcpStream,
    opened: Instant,
}

/// What the server did to a raw connection.
#[derive(Debug, Default)]
struct Seen {
    /// When the first GOAWAY came (since the connection opened) and its error code.
    goaway: Option<(Duration, u32)>,
    /// When the server closed the connection.
    closed: Option<Duration>,
    /// Response HEADERS frames and DATA frames seen.
    headers: usize,
    data: usize,
}

impl RawHttp2 {
    /// Connects and sends the client preface and empty SETTINGS.
    async fn connect(gateway: &Gateway) -> Self {
        let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        let mut raw = Self {
            stream,
            opened: Instant::now(),
        };
        raw.send(SETTINGS, 0, 0, &[]).await;
        raw
    }

    async fn send(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let length = payload.len() as u32;
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream_id.to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await.expect("write a frame");
    }

    /// Opens stream 1 as a call to the health service's Watch (a server stream that stays
    /// open), sending its one empty request message.
    async fn open_health_watch(&mut self, authority: &str) {
        let mut block = Vec::new();
        for (name, value) in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Watch"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            // HPACK: a literal field without indexing, new name, no Huffman coding.
            block.push(0x00);
            block.push(name.len() as u8);
            block.extend_from_slice(name.as_bytes());
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        self.send(HEADERS, END_HEADERS, 1, &block).await;
        // An empty message (no compression, length 0), and the request side is done.
        self.send(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]).await;
    }

    /// Cancels stream 1.
    async fn cancel_call(&mut self) {
        self.send(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()).await;
    }

    /// Reads frames for `during` (or until the server closes the connection), answering
    /// SETTINGS and PINGs; stops early at the first GOAWAY when `until_goaway`.
    async fn read_for(&mut self, during: Duration, until_goaway: bool, seen: &mut Seen) {
        let until = Instant::now() + during;
        while seen.closed.is_none() {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return;
            };
            let mut header = [0u8; 9];
            match tokio::time::timeout(left, self.stream.read_exact(&mut header)).await {
                Err(_) => return,
                Ok(Err(_)) => {
                    seen.closed = Some(self.opened.elapsed());
                    return;
                }
                Ok(Ok(_)) => {}
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let mut payload = vec![0u8; length];
            if self.stream.read_exact(&mut payload).await.is_err() {
                seen.closed = Some(self.opened.elapsed());
                return;
            }
            match kind {
                SETTINGS if flags & ACK == 0 => self.send(SETTINGS, ACK, 0, &[]).await,
                PING if flags & ACK == 0 => self.send(PING, ACK, 0, &payload).await,
                GOAWAY => {
                    let code = u32::from_be_bytes(payload[4..8].try_into().expect("8 bytes"));
                    if seen.goaway.is_none() {
                        seen.goaway = Some((self.opened.elapsed(), code));
                    }
                    if until_goaway {
                        return;
                    }
                }
                HEADERS => seen.headers += 1,
                DATA => seen.data += 1,
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_calls_gets_goaway_after_the_idle_timeout_and_is_closed() {
    let gateway = Gateway::start(&shared_redis().url(), &["--idle-timeout", "1s"]).await;
    let mut raw = RawHttp2::connect(&gateway).await;
    let mut seen = Seen::default();
    raw.read_for(Duration::from_secs(10), false, &mut seen)
        .await;
    let (at, code) = seen.goaway.expect("a GOAWAY within 10 s");
    assert_eq!(code, 0, "GOAWAY with NO_ERROR");
    assert!(
        at >= Duration::from_millis(1000) && at < Duration::from_secs(4),
        "GOAWAY {at:?} after connecting, with a 1 s idle timeout"
    );
    let closed = seen.closed.expect("the server closed the connection");
    assert!(closed >= at, "{seen:?}");
    gateway.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_a_call_open_is_not_idle_until_the_call_ends() {
    let gateway = Gateway::start(&shared_redis().url(), &["--idle-timeout", "1s"]).await;
    let mut raw = RawHttp2::connect(&gateway).await;
    raw.open_health_watch(&gateway.addr.to_string()).await;
    let mut seen = Seen::default();
    // Three idle timeouts long, with the Watch open.
    raw.read_for(Duration::from_secs(3), true, &mut seen).await;
    assert!(
        seen.headers >= 1 && seen.data >= 1,
        "the Watch answered: {seen:?}"
    );
    assert!(
        seen.goaway.is_none() && seen.closed.is_none(),
        "a connection with a call open was closed: {seen:?}"
    );
    // The call ends: from here the connection is idle.
    let ended = raw.opened.elapsed();
    raw.cancel_call().await;
    raw.read_for(Duration::from_secs(10), false, &mut seen)
        .await;
    let (at, code) = seen.goaway.expect("a GOAWAY once the call ended");
    assert_eq!(code, 0);
    assert!(
        at >= ended + Duration::from_millis(900) && at < ended + Duration::from_secs(4),
        "GOAWAY {:?} after the call ended",
        at.saturating_sub(ended)
    );
    assert!(seen.closed.is_some(), "{seen:?}");
    gateway.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_maximum_age_gets_goaway_even_with_a_call_open() {
    let gateway = Gateway::start(
        &shared_redis().url(),
        &["--max-connection-age", "1s", "--idle-timeout", "0s"],
    )
    .await;
    let mut raw = RawHttp2::connect(&gateway).await;
    raw.open_health_watch(&gateway.addr.to_string()).await;
    let mut seen = Seen::default();
    raw.read_for(Duration::from_secs(10), true, &mut seen).await;
    let (at, code) = seen.goaway.expect("a GOAWAY at the maximum age");
    assert_eq!(code, 0);
    assert!(
        at >= Duration::from_millis(1000) && at < Duration::from_secs(4),
        "GOAWAY {at:?} after connecting, with a 1 s maximum age"
    );
    // The call in progress goes on (the Watch is still open on this connection).
    assert!(seen.closed.is_none(), "{seen:?}");
    drop(raw);
    gateway.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_idle_timeout_an_idle_connection_stays_open() {
    let gateway = Gateway::start(&shared_redis().url(), &["--idle-timeout", "0s"]).await;
    let mut raw = RawHttp2::connect(&gateway).await;
    let mut seen = Seen::default();
    raw.read_for(Duration::from_secs(2), true, &mut seen).await;
    assert!(seen.goaway.is_none() && seen.closed.is_none(), "{seen:?}");
    gateway.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_whose_idle_connection_was_closed_connects_again_for_its_next_call() {
    let gateway = Gateway::start(
        &shared_redis().url(),
        &["--idle-timeout", "500ms", "--metrics-listen", "127.0.0.1:0"],
    )
    .await;
    let mut kv = gateway.kv().await;
    let key = unique_key("idle");
    for round in 0..3u8 {
        kv.set(pb::KeyValueSetRequest {
            key: key.clone(),
            value: Bytes::from(vec![round]),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("Set after {round} idle closes: {status:?}"));
        let read = kv
            .get(pb::KeyValueGetRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await
            .expect("Get")
            .into_inner();
        assert_eq!(read.value.as_ref(), [round]);
        // Longer than the idle timeout: the server closes the connection meanwhile.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // The client's connection was closed for idleness after each round (and the health
    // checks' connection at start too), and every close was counted.
    let (_, metrics) = gateway.scrape().await;
    let idle_closes = metric(
        &metrics,
        "gateway_connections_closed_total{reason=\"idle\"}",
    );
    assert!(idle_closes >= 3, "{idle_closes} idle closes:\n{metrics}");
    let accepted = metric(&metrics, "gateway_connections_accepted_total");
    assert!(accepted >= 4, "{accepted} connections accepted");
    gateway.stop().await.expect("clean stop");
}

/// The value of the sample `name` (with its labels) in a scrape.
fn metric(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{scrape}"))
}
