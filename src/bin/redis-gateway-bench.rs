//! `redis-gateway-bench`: a load generator for a running gateway.
//!
//! It keeps `--concurrency` calls in flight over `--connections` HTTP/2 connections (tonic
//! clients, one task per call slot, each sending its next call as soon as the last one is
//! answered), for `--warmup` and then `--duration`; only calls sent during the measured window
//! count. It prints calls per second and the latency percentiles (p50, p90, p99, p99.9, max)
//! of the measured calls, and with `--json` one JSON object instead (what `make bench` reads).
//!
//! Workloads:
//! - `get`: KeyValue.Get of one of `--keys` keys (written before the run);
//! - `set`: KeyValue.Set of one of `--keys` keys with a `--value-size` value;
//! - `hash-get-all`: Hash.GetAll of one of `--keys` hashes of `--hash-fields` fields;
//! - `lock`: Lock.Acquire then Lock.Release of the slot's own lock (uncontended): one call
//!   here is the pair;
//! - `lock-contended`: every slot queues on one lock (Acquire with a wait) and releases it as
//!   soon as it has it; the latency reported is the hand-off: from the holder sending Release
//!   to the next waiter's Acquire being answered;
//! - `mixed`: per call, 70% Get, 20% Set, 5% Hash.GetAll, 5% an Acquire+Release pair;
//! - `expiry-fanout`: `--concurrency` KeyValue.WatchExpirations streams (kind DELETED) on one
//!   pattern, while one client writes and deletes a key `--rate` times a second; a "call" is
//!   one event delivered to one watcher, its latency from the Delete being sent to the
//!   watcher receiving the event (the whole path: Redis' notification, the recorder, the
//!   stream, the reader, the fan-out). Gaps count as errors;
//! - `idle-connections`: opens `--connections` HTTP/2 connections, makes one Get on each, and
//!   keeps them open for `--duration` (what the gateway's memory is measured under).
//!
//! Keys are chosen uniformly or, with `--distribution zipf`, by a Zipf law (a few hot keys),
//! as a cache sees them. Every key lies under `--key-prefix`. With `--near-cache`, Gets ask for
//! the gateway's near cache.
//!
//! Example: `redis-gateway-bench --target 127.0.0.1:50051 --workload get --concurrency 64
//! --connections 8 --duration 10s`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution as _, Zipf};
use redis_gateway::pb;
use redis_gateway::pb::hash_client::HashClient;
use redis_gateway::pb::key_value_client::KeyValueClient;
use redis_gateway::pb::lock_client::LockClient;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// Load a running gateway and report throughput and latency.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The gateway's address, host:port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    /// What to call.
    #[arg(long, value_enum, default_value_t = Workload::Get)]
    workload: Workload,
    /// HTTP/2 connections to the gateway; the call slots are shared out over them.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Calls in flight at any time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to measure, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to load before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Distinct keys (and hashes) the calls spread over.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Bytes per value written by `set` and before `get`.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fields per hash for `hash-get-all`.
    #[arg(long, default_value_t = 10)]
    hash_fields: usize,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = KeyDistribution::Uniform)]
    distribution: KeyDistribution,
    /// The Zipf exponent (with `--distribution zipf`): near 1, a few keys take most calls.
    #[arg(long, default_value_t = 0.99)]
    zipf_exponent: f64,
    /// Every key the benchmark touches starts with this.
    #[arg(long, default_value = "bench:")]
    key_prefix: String,
    /// Client threads, each with its own single-threaded runtime and its share of the
    /// connections and call slots.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// `expiry-fanout`: keys deleted per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Gets (in `get` and `mixed`) ask for the gateway's near cache (`near_cache: true`).
    #[arg(long)]
    near_cache: bool,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
    /// Mark the measured window on standard error (`bench: measuring`, `bench: measured`), so
    /// that a script can read the gateway's counters at its edges.
    #[arg(long)]
    progress: bool,
}

/// What the benchmark calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Workload {
    Get,
    Set,
    HashGetAll,
    Lock,
    LockContended,
    Mixed,
    ExpiryFanout,
    IdleConnections,
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum KeyDistribution {
    Uniform,
    Zipf,
}

/// One operation of a workload.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Get,
    Set,
    HashGetAll,
    LockPair,
    LockHandOff,
}

impl Workload {
    /// The operation of the next call; `roll` is uniform in 0..100.
    fn operation(self, roll: u32) -> Operation {
        match self {
            Workload::Get => Operation::Get,
            Workload::Set => Operation::Set,
            Workload::HashGetAll => Operation::HashGetAll,
            Workload::Lock => Operation::LockPair,
            Workload::LockContended => Operation::LockHandOff,
            // Their own loops ([`expiry_fanout`], [`idle_connections`]) send what they send.
            Workload::ExpiryFanout | Workload::IdleConnections => Operation::Get,
            Workload::Mixed => match roll {
                0..70 => Operation::Get,
                70..90 => Operation::Set,
                90..95 => Operation::HashGetAll,
                _ => Operation::LockPair,
            },
        }
    }

    /// Whether its reads need keys written before the run.
    fn reads_strings(self) -> bool {
        matches!(
            self,
            Workload::Get | Workload::Mixed | Workload::IdleConnections
        )
    }

    fn reads_hashes(self) -> bool {
        matches!(self, Workload::HashGetAll | Workload::Mixed)
    }
}

/// The report, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    workload: Workload,
    target: String,
    connections: usize,
    concurrency: usize,
    distribution: KeyDistribution,
    keys: u64,
    value_size: usize,
    /// Whether Gets asked for the near cache.
    near_cache: bool,
    /// The measured window, in seconds.
    duration_seconds: f64,
    /// Calls sent and answered within the window.
    calls: u64,
    /// Calls that failed (sent within the window).
    errors: u64,
    /// The first error seen, if any.
    first_error: Option<String>,
    /// Calls per second.
    throughput: f64,
    /// Latency of the measured calls, in microseconds.
    latency_us: Percentiles,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        // Recorded in nanoseconds.
        let us = |nanos: u64| nanos as f64 / 1e3;
        Self {
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1e3,
        }
    }
}

/// The clients of one call slot.
#[derive(Clone)]
struct Clients {
    keys: KeyValueClient<Channel>,
    hashes: HashClient<Channel>,
    locks: LockClient<Channel>,
}

impl Clients {
    fn new(channel: Channel) -> Self {
        Self {
            keys: KeyValueClient::new(channel.clone()),
            hashes: HashClient::new(channel.clone()),
            locks: LockClient::new(channel),
        }
    }
}

impl Clients {
    /// Takes lock `name` for 10 s, waiting up to `wait_seconds`; its token.
    async fn acquire(
        &mut self,
        name: &str,
        wait_seconds: Option<i64>,
    ) -> Result<String, tonic::Status> {
        let seconds = |seconds| prost_types::Duration { seconds, nanos: 0 };
        let granted = self
            .locks
            .acquire(pb::LockAcquireRequest {
                name: name.to_owned(),
                ttl: Some(seconds(10)),
                wait_timeout: wait_seconds.map(seconds),
                ..Default::default()
            })
            .await?
            .into_inner();
        if !granted.acquired {
            return Err(tonic::Status::aborted(format!(
                "{name} was not granted (a slot's own lock, or within its wait)"
            )));
        }
        Ok(granted.token)
    }

    async fn release(&mut self, name: String, token: String) -> Result<(), tonic::Status> {
        self.locks
            .release(pb::LockReleaseRequest { name, token })
            .await?;
        Ok(())
    }
}

/// Settings every call slot shares.
struct Plan {
    workload: Workload,
    key_prefix: String,
    keys: u64,
    value: Bytes,
    /// Gets ask for the near cache.
    near_cache: bool,
    zipf: Option<Zipf<f64>>,
    /// Calls sent from here on count.
    measure_from: Instant,
    /// No call is sent from here on.
    end: Instant,
    /// `lock-contended`: when the last holder sent its Release.
    released_at: std::sync::Mutex<Option<Instant>>,
}

impl Plan {
    /// The index of the next key.
    fn key_index(&self, rng: &mut SmallRng) -> u64 {
        match &self.zipf {
            // Zipf yields 1..=n as a float; rank 1 is the hottest key.
            Some(zipf) => (zipf.sample(rng) as u64)
                .saturating_sub(1)
                .min(self.keys - 1),
            None => rng.random_range(0..self.keys),
        }
    }

    fn take_released_at(&self) -> Option<Instant> {
        self.released_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn set_released_at(&self, at: Instant) {
        *self
            .released_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at);
    }

    fn string_key(&self, index: u64) -> String {
        format!("{}k:{index}", self.key_prefix)
    }

    fn hash_key(&self, index: u64) -> String {
        format!("{}h:{index}", self.key_prefix)
    }
}

/// What one call slot measured.
struct SlotOutcome {
    latencies: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl SlotOutcome {
    fn new() -> Self {
        Self {
            latencies: latency_histogram(),
            errors: 0,
            first_error: None,
        }
    }

    /// Adds `other`'s calls and errors to these.
    fn merge(&mut self, other: SlotOutcome) -> Result<(), String> {
        self.latencies
            .add(&other.latencies)
            .map_err(|err| format!("merging latencies: {err}"))?;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }
}

fn latency_histogram() -> Histogram<u64> {
    // 1 µs to 60 s in nanoseconds, three significant digits.
    match Histogram::new_with_bounds(1_000, 60_000_000_000, 3) {
        Ok(histogram) => histogram,
        // The bounds are constants that hdrhistogram accepts.
        Err(err) => unreachable!("latency histogram bounds: {err}"),
    }
}

/// What a finished operation reports.
enum Latency {
    /// The time from sending it to its answer.
    OfTheCall,
    /// A lock hand-off's: from the previous holder's Release to this grant.
    HandOff(Duration),
    /// Nothing (the first grant of a contended lock had no holder before it).
    Nothing,
}

/// Runs one operation; a lock pair is both calls.
async fn call(
    clients: &mut Clients,
    plan: &Plan,
    operation: Operation,
    key: u64,
    slot: usize,
) -> Result<Latency, tonic::Status> {
    match operation {
        Operation::Get => {
            clients
                .keys
                .get(pb::KeyValueGetRequest {
                    key: plan.string_key(key),
                    near_cache: plan.near_cache,
                    ..Default::default()
                })
                .await?;
        }
        Operation::Set => {
            clients
                .keys
                .set(pb::KeyValueSetRequest {
                    key: plan.string_key(key),
                    value: plan.value.clone(),
                    ..Default::default()
                })
                .await?;
        }
        Operation::HashGetAll => {
            clients
                .hashes
                .get_all(pb::HashGetAllRequest {
                    name: plan.hash_key(key),
                })
                .await?;
        }
        Operation::LockPair => {
            let name = format!("{}lock:{slot}", plan.key_prefix);
            let token = clients.acquire(&name, None).await?;
            clients.release(name, token).await?;
        }
        Operation::LockHandOff => {
            let name = format!("{}lock:contended", plan.key_prefix);
            let token = clients.acquire(&name, Some(30)).await?;
            let hand_off = plan.take_released_at().map(|released| released.elapsed());
            plan.set_released_at(Instant::now());
            clients.release(name, token).await?;
            return Ok(hand_off.map_or(Latency::Nothing, Latency::HandOff));
        }
    }
    Ok(Latency::OfTheCall)
}

/// One call slot: calls back to back until the plan's end.
async fn run_slot(mut clients: Clients, plan: Arc<Plan>, slot: usize) -> SlotOutcome {
    let mut rng = SmallRng::seed_from_u64(slot as u64);
    let mut outcome = SlotOutcome::new();
    loop {
        let sent = Instant::now();
        if sent >= plan.end {
            return outcome;
        }
        let operation = plan.workload.operation(rng.random_range(0..100));
        let key = plan.key_index(&mut rng);
        let result = call(&mut clients, &plan, operation, key, slot).await;
        if sent < plan.measure_from {
            continue;
        }
        match result {
            Ok(latency) => {
                let latency = match latency {
                    Latency::OfTheCall => sent.elapsed(),
                    Latency::HandOff(latency) => latency,
                    Latency::Nothing => continue,
                };
                let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                outcome.latencies.saturating_record(nanos);
            }
            Err(status) => {
                outcome.errors += 1;
                outcome
                    .first_error
                    .get_or_insert_with(|| status.to_string());
            }
        }
    }
}

/// Writes the keys and hashes the workload reads.
async fn prepare(args: &Args, channels: &[Channel], plan: &Plan) -> Result<(), tonic::Status> {
    const BATCH: u64 = 100;
    let mut tasks = tokio::task::JoinSet::new();
    let batches = args.keys.div_ceil(BATCH);
    for batch in 0..batches {
        let channel = channels[batch as usize % channels.len()].clone();
        let range = batch * BATCH..((batch + 1) * BATCH).min(args.keys);
        let strings: Vec<pb::KeyValueEntry> = if args.workload.reads_strings() {
            range
                .clone()
                .map(|index| pb::KeyValueEntry {
                    key: plan.string_key(index),
                    value: plan.value.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let hashes: Vec<String> = if args.workload.reads_hashes() {
            range.map(|index| plan.hash_key(index)).collect()
        } else {
            Vec::new()
        };
        let fields: HashMap<String, Bytes> = (0..args.hash_fields)
            .map(|field| (format!("field{field}"), plan.value.clone()))
            .collect();
        tasks.spawn(async move {
            if !strings.is_empty() {
                KeyValueClient::new(channel.clone())
                    .set_many(pb::KeyValueSetManyRequest {
                        entries: strings,
                        ..Default::default()
                    })
                    .await?;
            }
            let mut hash_client = HashClient::new(channel);
            for name in hashes {
                hash_client
                    .set(pb::HashSetRequest {
                        name,
                        fields: fields.clone(),
                        ttl: None,
                    })
                    .await?;
            }
            Ok::<(), tonic::Status>(())
        });
        // At most 64 batches at a time.
        if tasks.len() >= 64
            && let Some(done) = tasks.join_next().await
        {
            done.map_err(|err| tonic::Status::internal(err.to_string()))??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|err| tonic::Status::internal(err.to_string()))??;
    }
    Ok(())
}

async fn connect(target: &str, count: usize) -> Result<Vec<Channel>, String> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let endpoint = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|err| format!("--target {target}: {err}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint
            .connect()
            .await
            .map_err(|err| format!("cannot connect to {target}: {err}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// A single-threaded runtime, as each client thread runs (so that the calls a thread has
/// ready go out in few writes, as in the gateway).
fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start a runtime: {err}"))
}

/// What one client thread measured.
type ThreadOutcome = Result<SlotOutcome, String>;

/// One client thread: connects `connections` channels, says it is ready, waits for the plan,
/// then runs `slots` call slots on them.
fn client_thread(
    target: String,
    connections: usize,
    slots: Vec<usize>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    plan: std::sync::mpsc::Receiver<Arc<Plan>>,
) -> ThreadOutcome {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async move {
        let channels = match connect(&target, connections).await {
            Ok(channels) => channels,
            Err(err) => {
                let _ = ready.send(Err(err.clone()));
                return Err(err);
            }
        };
        let _ = ready.send(Ok(()));
        let plan = plan
            .recv()
            .map_err(|_| "the run was called off".to_owned())?;
        let mut tasks = tokio::task::JoinSet::new();
        for (index, slot) in slots.into_iter().enumerate() {
            let clients = Clients::new(channels[index % channels.len()].clone());
            tasks.spawn(run_slot(clients, plan.clone(), slot));
        }
        let mut merged = SlotOutcome::new();
        while let Some(outcome) = tasks.join_next().await {
            let outcome = outcome.map_err(|err| format!("a call slot failed: {err}"))?;
            merged.merge(outcome)?;
        }
        Ok(merged)
    })
}

/// The `expiry-fanout` workload, on one runtime: watchers, then the deleting client.
async fn expiry_fanout(args: &Args, plan: Arc<Plan>) -> Result<SlotOutcome, String> {
    use pb::key_value_watch_expirations_response::Event;
    let channels = connect(&args.target, args.connections).await?;
    let pattern = format!("{}fan:*", plan.key_prefix);
    // Key number → when its Delete was sent.
    let sent: Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Arc::default();
    // Set once every watcher is subscribed: deletions sent from then on (past the warm-up)
    // are measured.
    let window: Arc<std::sync::OnceLock<(Instant, Instant)>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(16);
    let mut watchers = tokio::task::JoinSet::new();
    for watcher in 0..args.concurrency {
        let mut client = KeyValueClient::new(channels[watcher % channels.len()].clone());
        let (pattern, sent, stop, ready, window) = (
            pattern.clone(),
            sent.clone(),
            stop.clone(),
            ready_tx.clone(),
            window.clone(),
        );
        let prefix = format!("{}fan:", plan.key_prefix);
        watchers.spawn(async move {
            let mut outcome = SlotOutcome::new();
            let request = pb::KeyValueWatchExpirationsRequest {
                pattern,
                kinds: vec![pb::KeyEventKind::Deleted as i32],
                resume_after: String::new(),
            };
            let mut stream = match client.watch_expirations(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let _ = ready.send(Err(status.to_string())).await;
                    return outcome;
                }
            };
            loop {
                let message = tokio::select! {
                    message = stream.message() => message,
                    () = stop.cancelled() => return outcome,
                };
                match message.map(|message| message.and_then(|message| message.event)) {
                    Ok(Some(Event::Subscribed(_))) => {
                        let _ = ready.send(Ok(())).await;
                    }
                    Ok(Some(Event::Expired(event))) => {
                        let received = Instant::now();
                        let number = event
                            .key
                            .strip_prefix(&prefix)
                            .and_then(|number| number.parse::<u64>().ok());
                        let sent_at = number.and_then(|number| {
                            sent.lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .get(&number)
                                .copied()
                        });
                        let measured = |at: &Instant| {
                            window
                                .get()
                                .is_some_and(|(from, end)| at >= from && at < end)
                        };
                        if let Some(sent_at) = sent_at.filter(measured) {
                            let nanos = u64::try_from(received.duration_since(sent_at).as_nanos())
                                .unwrap_or(u64::MAX);
                            outcome.latencies.saturating_record(nanos);
                        }
                    }
                    Ok(Some(Event::Gap(gap))) => {
                        outcome.errors += gap.dropped.max(1);
                        outcome
                            .first_error
                            .get_or_insert_with(|| format!("gap: {}", gap.reason));
                    }
                    Ok(None) => return outcome,
                    Err(status) => {
                        outcome.errors += 1;
                        outcome
                            .first_error
                            .get_or_insert_with(|| status.to_string());
                        return outcome;
                    }
                }
            }
        });
    }
    drop(ready_tx);
    for _ in 0..args.concurrency {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(err)) => return Err(format!("WatchExpirations failed: {err}")),
            None => return Err("a watcher ended before it was subscribed".into()),
        }
    }
    let measure_from = Instant::now() + args.warmup;
    let end = measure_from + args.duration;
    let _ = window.set((measure_from, end));
    if args.progress {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            eprintln!("bench: measuring");
            tokio::time::sleep_until(end.into()).await;
            eprintln!("bench: measured");
        });
    }
    let mut keys = KeyValueClient::new(channels[0].clone());
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut number = 0_u64;
    while Instant::now() < end {
        ticks.tick().await;
        number += 1;
        let key = format!("{}fan:{number}", plan.key_prefix);
        keys.set(pb::KeyValueSetRequest {
            key: key.clone(),
            value: plan.value.clone(),
            ..Default::default()
        })
        .await
        .map_err(|status| format!("Set failed: {status}"))?;
        sent.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(number, Instant::now());
        keys.delete(pb::KeyValueDeleteRequest { keys: vec![key] })
            .await
            .map_err(|status| format!("Delete failed: {status}"))?;
    }
    // The last events' way through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let mut merged = SlotOutcome::new();
    while let Some(outcome) = watchers.join_next().await {
        let outcome = outcome.map_err(|err| format!("a watcher failed: {err}"))?;
        merged.merge(outcome)?;
    }
    Ok(merged)
}

/// The `idle-connections` workload: `--connections` connections, one Get each, then idle.
async fn idle_connections(args: &Args, plan: Arc<Plan>) -> Result<SlotOutcome, String> {
    let mut outcome = SlotOutcome::new();
    let mut opened = Vec::with_capacity(args.connections);
    for batch in (0..args.connections).collect::<Vec<_>>().chunks(256) {
        let mut connecting = tokio::task::JoinSet::new();
        for &connection in batch {
            let target = args.target.clone();
            let key = plan.string_key(connection as u64 % plan.keys);
            connecting.spawn(async move {
                let channel = connect(&target, 1).await?.remove(0);
                let sent = Instant::now();
                KeyValueClient::new(channel.clone())
                    .get(pb::KeyValueGetRequest {
                        key,
                        ..Default::default()
                    })
                    .await
                    .map_err(|status| status.to_string())?;
                Ok::<_, String>((channel, sent.elapsed()))
            });
        }
        while let Some(done) = connecting.join_next().await {
            match done.map_err(|err| err.to_string()).and_then(|done| done) {
                Ok((channel, latency)) => {
                    let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                    outcome.latencies.saturating_record(nanos);
                    opened.push(channel);
                }
                Err(err) => {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert(err);
                }
            }
        }
    }
    if args.progress {
        eprintln!("bench: measuring");
    }
    tokio::time::sleep(args.duration).await;
    if args.progress {
        eprintln!("bench: measured");
    }
    drop(opened);
    Ok(outcome)
}

/// Runs the workloads that are not call slots on one runtime of this thread.
fn run_own_loop(args: &Args, plan: Plan) -> Result<SlotOutcome, String> {
    let plan = Arc::new(plan);
    current_thread_runtime()?.block_on(async {
        match args.workload {
            Workload::ExpiryFanout => expiry_fanout(args, plan.clone()).await,
            _ => idle_connections(args, plan.clone()).await,
        }
    })
}

fn run(args: &Args) -> Result<Report, String> {
    if args.connections == 0 || args.concurrency == 0 || args.keys == 0 || args.threads == 0 {
        return Err("--connections, --concurrency, --keys and --threads must be at least 1".into());
    }
    let zipf = match args.distribution {
        KeyDistribution::Uniform => None,
        KeyDistribution::Zipf => Some(
            Zipf::new(args.keys as f64, args.zipf_exponent)
                .map_err(|err| format!("--zipf-exponent: {err}"))?,
        ),
    };
    let mut plan = Plan {
        workload: args.workload,
        key_prefix: args.key_prefix.clone(),
        keys: args.keys,
        value: Bytes::from(vec![b'x'; args.value_size]),
        near_cache: args.near_cache,
        zipf,
        measure_from: Instant::now(),
        end: Instant::now(),
        released_at: std::sync::Mutex::new(None),
    };
    current_thread_runtime()?.block_on(async {
        let channels = connect(&args.target, args.connections.min(8)).await?;
        prepare(args, &channels, &plan)
            .await
            .map_err(|status| format!("writing the keys before the run failed: {status}"))
    })?;

    if matches!(
        args.workload,
        Workload::ExpiryFanout | Workload::IdleConnections
    ) {
        // Their window starts once they are set up (every watcher subscribed, every
        // connection open).
        let outcome = run_own_loop(args, plan)?;
        return Ok(report(args, outcome));
    }

    // Connections and call slots are shared out over the threads, round robin.
    let threads = args.threads.min(args.connections);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut plan_senders = Vec::with_capacity(threads);
    let mut handles = Vec::with_capacity(threads);
    for thread in 0..threads {
        let connections = (thread..args.connections).step_by(threads).count();
        let slots: Vec<usize> = (thread..args.concurrency).step_by(threads).collect();
        let (plan_tx, plan_rx) = std::sync::mpsc::channel();
        plan_senders.push(plan_tx);
        let (target, ready) = (args.target.clone(), ready_tx.clone());
        handles.push(std::thread::spawn(move || {
            client_thread(target, connections, slots, ready, plan_rx)
        }));
    }
    for _ in 0..threads {
        ready_rx
            .recv()
            .map_err(|_| "a client thread ended before connecting".to_owned())??;
    }
    plan.measure_from = Instant::now() + args.warmup;
    plan.end = plan.measure_from + args.duration;
    let plan = Arc::new(plan);
    for sender in plan_senders {
        let _ = sender.send(plan.clone());
    }
    if args.progress {
        std::thread::sleep(plan.measure_from.saturating_duration_since(Instant::now()));
        eprintln!("bench: measuring");
        std::thread::sleep(plan.end.saturating_duration_since(Instant::now()));
        eprintln!("bench: measured");
    }
    let mut merged = SlotOutcome::new();
    for handle in handles {
        let outcome = handle
            .join()
            .map_err(|_| "a client thread panicked".to_owned())??;
        merged.merge(outcome)?;
    }
    Ok(report(args, merged))
}

/// The report of what every slot measured.
fn report(args: &Args, outcome: SlotOutcome) -> Report {
    let window = args.duration.as_secs_f64();
    let calls = outcome.latencies.len();
    Report {
        workload: args.workload,
        target: args.target.clone(),
        connections: args.connections,
        concurrency: args.concurrency,
        distribution: args.distribution,
        keys: args.keys,
        value_size: args.value_size,
        near_cache: args.near_cache,
        duration_seconds: window,
        calls,
        errors: outcome.errors,
        first_error: outcome.first_error,
        throughput: calls as f64 / window,
        latency_us: Percentiles::of(&outcome.latencies),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let report = match run(&args) {
        Ok(report) => report,
        Err(message) => {
            eprintln!("redis-gateway-bench: {message}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(err) => {
                eprintln!("cannot encode the report: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let ms = |us: f64| us / 1e3;
        println!(
            "{:<13} {:>3} conns {:>4} in flight  {:>9.0} calls/s  p50 {:.3} ms  p90 {:.3} ms  \
             p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  errors {}",
            format!("{:?}", report.workload).to_lowercase(),
            report.connections,
            report.concurrency,
            report.throughput,
            ms(report.latency_us.p50),
            ms(report.latency_us.p90),
            ms(report.latency_us.p99),
            ms(report.latency_us.p999),
            ms(report.latency_us.max),
            report.errors,
        );
    }
    if let Some(error) = &report.first_error {
        eprintln!(
            "redis-gateway-bench: {} calls failed; the first: {error}",
            report.errors
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
