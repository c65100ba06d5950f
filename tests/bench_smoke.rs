//! A few-second run of the benchmark that `make bench` runs (scripts/bench-report.py driving
//! redis-benchmark and redis-gateway-bench against a private redis-server), with this build's
//! binaries, so that neither rots. It asserts that every figure was produced and that no call
//! failed; it asserts nothing about speed (a test machine's speed says nothing).

use std::path::Path;
use std::process::Command;

#[test]
fn the_benchmark_report_runs_every_workload_without_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("a temporary directory");
    let json = work.path().join("bench.json");
    let output = Command::new("python3")
        .arg(root.join("scripts/bench-report.py"))
        .args(["--gateway", env!("CARGO_BIN_EXE_redis-gateway")])
        .args(["--bench", env!("CARGO_BIN_EXE_redis-gateway-bench")])
        .args(["--concurrency", "1", "4"])
        .args(["--duration", "0.5", "--warmup", "0.1"])
        .args(["--requests", "2000", "--keys", "200"])
        .args(["--fanout", "20", "--idle-connections", "50"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("python3 runs scripts/bench-report.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench-report failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
    let rows = report["rows"].as_array().expect("rows");
    for concurrency in [1, 4] {
        for what in [
            "redis-benchmark GET",
            "redis-benchmark GET -P 16",
            "redis-benchmark SET",
            "redis-benchmark SET -P 16",
            "gateway KeyValue.Get",
            "gateway KeyValue.Set",
            "gateway Hash.GetAll (10 fields)",
            "gateway Lock Acquire+Release pair",
            "gateway mixed 70/20/5/5",
        ] {
            let row = rows
                .iter()
                .find(|row| row["what"] == what && row["concurrency"] == concurrency)
                .unwrap_or_else(|| panic!("no row for {what} at {concurrency}:\n{stdout}"));
            assert!(
                row["throughput"].as_f64().is_some_and(|rps| rps > 0.0),
                "{what} at {concurrency}: {row}"
            );
            assert!(row["p99_ms"].as_f64().is_some(), "{row}");
            if row["kind"] == "gateway" {
                assert_eq!(row["errors"], 0, "{row}");
                assert!(row["cpu_us_per_call"].as_f64().is_some(), "{row}");
                assert!(row["rss_kib"].as_u64().is_some_and(|kib| kib > 0), "{row}");
            }
        }
    }
    for (what, calls) in [
        // 50 deletions a second for half a second, each to 20 watchers: some were delivered.
        ("gateway WatchExpirations fan-out (deliveries)", 1),
        // One Get per connection.
        ("gateway idle connections (one Get each)", 50),
    ] {
        let row = rows
            .iter()
            .find(|row| row["what"] == what)
            .unwrap_or_else(|| panic!("no row for {what}:\n{stdout}"));
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["calls"].as_u64().is_some_and(|n| n >= calls), "{row}");
    }
    assert!(
        report["gateway_peak_rss_kib"]
            .as_u64()
            .is_some_and(|kib| kib > 0)
    );
    // The table names every line and the ratio column.
    assert!(stdout.contains("gateway KeyValue.Get"), "{stdout}");
    assert!(stdout.contains("ratio"), "{stdout}");
}
