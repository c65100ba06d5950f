//! The per-call metrics: `grpc_server_handled_total` and `grpc_server_handling_seconds`.
//!
//! The hot path records into tables of plain atomics, one [`CallTable`] per runtime, so a
//! call touches only its own runtime's cache lines: no lock (prometheus-client's `Histogram`
//! takes a mutex per observation) and no line bouncing between cores (a shared counter
//! would). A scrape sums the runtimes' tables ([`CallTables`]) and encodes the sums.
//!
//! The label sets are resolved once, not per call: [`MethodIndex`] numbers every method the
//! gateway serves (from the descriptor sets of its services, so an unknown path cannot create
//! series: it shares one `unknown` label set), and a call finds its number with one hash of its
//! path. Recording is then one clock read, two atomic additions and the sum. Where the status
//! code is read from is [`crate::service::calls`]' business; it hands it here.
//!
//! Only series that occurred are encoded: a method's counter for a code once a call ended so,
//! its histogram once a call ended at all.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prost::Message;
use tonic::Code;

use super::LATENCY_BUCKETS;

/// Label values of the status codes, indexed by code (as the gRPC spec spells them).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Latency buckets: [`LATENCY_BUCKETS`] and the overflow (`+Inf`) bucket.
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// [`LATENCY_BUCKETS`] in nanoseconds, so a call's bucket is found by integer comparisons.
const BUCKET_BOUNDS_NANOS: [u64; LATENCY_BUCKETS.len()] = {
    let mut nanos = [0; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < nanos.len() {
        // Exact for these bounds (multiples of 100 µs); the cast is what a const allows.
        nanos[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// The descriptor sets of every service the gateway serves; their methods are the ones
/// measured one by one.
fn served_descriptor_sets() -> [&'static [u8]; 4] {
    [
        crate::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
}

/// FNV-1a, for the method index: its keys are the few dozen paths the gateway serves, fixed at
/// start, so an unkeyed hash is safe (a client's path is only looked up, never inserted), and
/// it takes half the instructions of the default SipHash on a 30-byte path.
struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`PathHasher`]s from FNV's offset basis.
#[derive(Clone, Copy, Default)]
struct PathHashing;

impl BuildHasher for PathHashing {
    type Hasher = PathHasher;

    fn build_hasher(&self) -> PathHasher {
        PathHasher(0xcbf2_9ce4_8422_2325)
    }
}

/// A method's label values.
struct MethodLabels {
    /// The gRPC service, e.g. `redisgateway.v1.KeyValue`.
    grpc_service: String,
    /// The method, e.g. `Get`.
    grpc_method: String,
}

impl MethodLabels {
    /// The label set of its latency histogram.
    fn label_set(&self) -> [(&str, &str); 2] {
        [
            ("grpc_service", &self.grpc_service),
            ("grpc_method", &self.grpc_method),
        ]
    }
}

/// Every method the gateway serves, numbered; the last number is the `unknown` method.
struct MethodIndex {
    /// `/package.Service/Method` → its number.
    by_path: HashMap<String, usize, PathHashing>,
    /// Each number's labels.
    labels: Vec<MethodLabels>,
}

impl MethodIndex {
    fn new() -> Self {
        let mut by_path = HashMap::with_hasher(PathHashing);
        let mut labels = Vec::new();
        for encoded in served_descriptor_sets() {
            let set = match prost_types::FileDescriptorSet::decode(encoded) {
                Ok(set) => set,
                Err(err) => {
                    // Compiled in and checked by the tests; its methods would count as unknown.
                    tracing::warn!(error = %err, "a descriptor set does not decode");
                    continue;
                }
            };
            for file in set.file {
                for service in &file.service {
                    let service_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        by_path.insert(format!("/{service_name}/{}", method.name()), labels.len());
                        labels.push(MethodLabels {
                            grpc_service: service_name.clone(),
                            grpc_method: method.name().to_owned(),
                        });
                    }
                }
            }
        }
        labels.push(MethodLabels {
            grpc_service: "unknown".to_owned(),
            grpc_method: "unknown".to_owned(),
        });
        Self { by_path, labels }
    }

    /// The number of the method `path` calls (the `unknown` one for a path not served).
    fn method(&self, path: &str) -> usize {
        self.by_path
            .get(path)
            .copied()
            .unwrap_or(self.labels.len() - 1)
    }
}

/// One method's counters on one runtime.
#[derive(Default)]
struct MethodSeries {
    /// Calls ended, per status code.
    handled: [AtomicU64; CODE_NAMES.len()],
    /// Calls per latency bucket (not cumulative).
    buckets: [AtomicU64; BUCKETS],
    /// Their summed latency, in nanoseconds (584 years of calls before it wraps).
    sum_nanos: AtomicU64,
}

/// One runtime's counters of every method. Its calls are the only writers, so the additions
/// never contend; a scrape reads them from another thread, hence atomics.
pub struct CallTable {
    /// The method numbers, shared by every runtime.
    index: Arc<MethodIndex>,
    /// Indexed by method number.
    series: Box<[MethodSeries]>,
}

impl CallTable {
    /// The number of the method `path` calls, for [`CallTable::record`].
    pub fn method(&self, path: &str) -> usize {
        self.index.method(path)
    }

    /// Records a call of method number `method` that ended with `code` after `elapsed`.
    pub fn record(&self, method: usize, code: Code, elapsed: Duration) {
        let Some(series) = self.series.get(method) else {
            return;
        };
        let code = (code as usize).min(CODE_NAMES.len() - 1);
        series.handled[code].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BUCKETS - 1);
        series.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        series.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Every runtime's [`CallTable`], summed when scraped.
pub(super) struct CallTables {
    /// The method numbers every table uses.
    index: Arc<MethodIndex>,
    /// One per runtime (a runtime's table lives as long as the process's metrics).
    tables: Mutex<Vec<Arc<CallTable>>>,
}

impl CallTables {
    pub(super) fn new() -> Self {
        Self {
            index: Arc::new(MethodIndex::new()),
            tables: Mutex::new(Vec::new()),
        }
    }

    /// A new table for one runtime's calls, included in every later scrape.
    pub(super) fn add_runtime(&self) -> Arc<CallTable> {
        let table = Arc::new(CallTable {
            index: self.index.clone(),
            series: (0..self.index.labels.len())
                .map(|_| MethodSeries::default())
                .collect(),
        });
        self.lock().push(table.clone());
        table
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<CallTable>>> {
        // The vector stays whole whatever panicked while it was held: use it.
        self.tables
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every runtime's counters of one method, summed.
    fn sum(tables: &[Arc<CallTable>], method: usize) -> Summed {
        let mut summed = Summed::default();
        for series in tables.iter().filter_map(|table| table.series.get(method)) {
            for (total, count) in summed.handled.iter_mut().zip(&series.handled) {
                *total += count.load(Ordering::Relaxed);
            }
            for (total, count) in summed.buckets.iter_mut().zip(&series.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
            summed.sum_nanos += series.sum_nanos.load(Ordering::Relaxed);
        }
        summed
    }

    /// Encodes both families.
    pub(super) fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let tables = self.lock().clone();
        let summed: Vec<Summed> = (0..self.index.labels.len())
            .map(|method| Self::sum(&tables, method))
            .collect();

        let mut handled = encoder.encode_descriptor(
            "grpc_server_handled",
            "gRPC calls finished, by service, method and status code",
            None,
            MetricType::Counter,
        )?;
        for (labels, summed) in self.index.labels.iter().zip(&summed) {
            for (code, &count) in summed.handled.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                let [service, method] = labels.label_set();
                handled
                    .encode_family(&[service, method, ("grpc_code", CODE_NAMES[code])])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }

        let mut latency = encoder.encode_descriptor(
            "grpc_server_handling_seconds",
            "Time from a gRPC request to its status (for a server stream: its whole life)",
            None,
            MetricType::Histogram,
        )?;
        for (labels, summed) in self.index.labels.iter().zip(&summed) {
            // The count is the buckets' sum, so the two always agree in one scrape.
            let count: u64 = summed.buckets.iter().sum();
            if count == 0 {
                continue;
            }
            let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(summed.buckets)
                .collect();
            // Nanoseconds to seconds: f64 holds any realistic sum exactly enough.
            let seconds = summed.sum_nanos as f64 / 1e9;
            latency
                .encode_family(&labels.label_set())?
                .encode_histogram::<NoLabelSet>(seconds, count, &buckets, None)?;
        }
        Ok(())
    }
}

/// One method's counters summed over the runtimes.
#[derive(Default)]
struct Summed {
    handled: [u64; CODE_NAMES.len()],
    buckets: [u64; BUCKETS],
    sum_nanos: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_has_its_own_labels() {
        let index = MethodIndex::new();
        let get = &index.labels[index.method("/redisgateway.v1.KeyValue/Get")];
        assert_eq!(get.grpc_service, "redisgateway.v1.KeyValue");
        assert_eq!(get.grpc_method, "Get");
        for path in [
            "/redisgateway.v1.Lock/Hold",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(index.by_path.contains_key(path), "{path}");
        }
        assert_eq!(
            index.labels[index.method("/nope.Nope/Nope")].grpc_service,
            "unknown"
        );
    }

    #[test]
    fn code_names_follow_tonic_codes() {
        assert_eq!(CODE_NAMES[Code::Ok as usize], "OK");
        assert_eq!(
            CODE_NAMES[Code::InvalidArgument as usize],
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            CODE_NAMES[Code::Unauthenticated as usize],
            "UNAUTHENTICATED"
        );
        assert_eq!(Code::from_bytes(b"3"), Code::InvalidArgument);
    }

    #[test]
    fn bucket_bounds_are_the_latency_buckets_in_nanoseconds() {
        assert_eq!(BUCKET_BOUNDS_NANOS[0], 100_000);
        assert_eq!(BUCKET_BOUNDS_NANOS[3], 1_000_000);
        assert_eq!(
            BUCKET_BOUNDS_NANOS[LATENCY_BUCKETS.len() - 1],
            10_000_000_000
        );
    }

    #[test]
    fn runtimes_are_summed_into_one_series_per_method_and_code() {
        let tables = CallTables::new();
        let (first, second) = (tables.add_runtime(), tables.add_runtime());
        let get = first.method("/redisgateway.v1.KeyValue/Get");
        first.record(get, Code::Ok, Duration::from_micros(50));
        second.record(get, Code::Ok, Duration::from_millis(2));
        second.record(get, Code::NotFound, Duration::from_secs(60));
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(TablesCollector(tables)));
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        let get_labels = r#"grpc_service="redisgateway.v1.KeyValue",grpc_method="Get""#;
        for line in [
            format!(r#"grpc_server_handled_total{{{get_labels},grpc_code="OK"}} 2"#),
            format!(r#"grpc_server_handled_total{{{get_labels},grpc_code="NOT_FOUND"}} 1"#),
            format!(r#"grpc_server_handling_seconds_count{{{get_labels}}} 3"#),
            format!(r#"grpc_server_handling_seconds_bucket{{le="0.0001",{get_labels}}} 1"#),
            format!(r#"grpc_server_handling_seconds_bucket{{le="0.0025",{get_labels}}} 2"#),
            format!(r#"grpc_server_handling_seconds_bucket{{le="10.0",{get_labels}}} 2"#),
            format!(r#"grpc_server_handling_seconds_bucket{{le="+Inf",{get_labels}}} 3"#),
        ] {
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
        let sum = text
            .lines()
            .find(|line| line.starts_with("grpc_server_handling_seconds_sum"))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
            .expect("a sum");
        assert!((sum - 60.00205).abs() < 1e-9, "{sum}");
        assert!(
            !text.contains("Set\""),
            "no series for methods never called"
        );
    }

    /// Encodes `CallTables` alone.
    #[derive(Debug)]
    struct TablesCollector(CallTables);

    impl std::fmt::Debug for CallTables {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("CallTables")
        }
    }

    impl prometheus_client::collector::Collector for TablesCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
            self.0.encode(&mut encoder)
        }
    }
}
