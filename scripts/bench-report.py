#!/usr/bin/env python3
"""The gateway against Redis itself, in one run: what `make bench` runs.

Starts a private redis-server on a free loopback port, measures redis-benchmark (GET and SET,
not pipelined and with -P 16) against it at each concurrency, then starts the gateway on the
same Redis and loads it with redis-gateway-bench (Get, Set, Hash.GetAll, Lock Acquire+Release,
mixed, and Gets of Zipf-distributed keys with and without the near cache) at the same
concurrencies, and prints one table per concurrency with each figure's
ratio to redis-benchmark. For every gateway run it also records the gateway's CPU time per
call and syscalls per call (over the measured window only: perf's raw_syscalls tracepoint when
perf works here, else "-"), and the gateway's peak RSS.

    scripts/bench-report.py [--concurrency 1 8 64 256] [--duration 10] [--warmup 2]
                            [--workloads get set ...] [--json out.json] [--plot out.png]

--gateway / --bench name the binaries (default: target/release/ of this checkout, built by
`make bench`). --plot draws throughput and p99 against concurrency (needs matplotlib).
Only the standard library otherwise; needs redis-server and redis-benchmark.
"""

import argparse
import csv
import io
import json
import os
import re
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")
# Workload → (label, the redis-benchmark test its ratio is taken against).
WORKLOADS = {
    "get": ("KeyValue.Get", "GET"),
    "set": ("KeyValue.Set", "SET"),
    "get-zipf": ("KeyValue.Get, Zipf keys", "GET"),
    "get-zipf-near-cache": ("KeyValue.Get, Zipf keys, near cache", "GET"),
    "hash-get-all": ("Hash.GetAll (10 fields)", None),
    "lock": ("Lock Acquire+Release pair", None),
    "mixed": ("mixed 70/20/5/5", None),
    "expiry-fanout": ("WatchExpirations fan-out (deliveries)", None),
    "idle-connections": ("idle connections (one Get each)", None),
}
# Workloads that are the load generator's with options: (its workload, its options).
VARIANTS = {
    "get-zipf": ("get", ["--distribution", "zipf"]),
    "get-zipf-near-cache": ("get", ["--distribution", "zipf", "--near-cache"]),
}
# Run once (--fanout, --idle-connections), not at each concurrency.
SPECIAL = ("expiry-fanout", "idle-connections")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line; 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / TICKS


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def perf_works():
    if shutil.which("perf") is None:
        return False
    probe = subprocess.run(
        ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0 and "not supported" not in probe.stderr


class SyscallCounter:
    """perf stat on one process, for one window."""

    def __init__(self, pid, enabled):
        self.process = None
        self.output = None
        if enabled:
            self.output = tempfile.NamedTemporaryFile("w+", suffix=".perf")
            self.process = subprocess.Popen(
                ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(pid),
                 "-o", self.output.name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def stop(self):
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=10)
        self.output.seek(0)
        for line in self.output.read().splitlines():
            parts = line.split(",")
            if len(parts) > 2 and parts[2] == "raw_syscalls:sys_enter" and parts[0].isdigit():
                return int(parts[0])
        return None


def redis_benchmark(port, test, concurrency, requests, pipeline):
    args = ["redis-benchmark", "-p", str(port), "-c", str(concurrency), "-n", str(requests),
            "-d", "100", "-t", test.lower(), "--csv"]
    if pipeline > 1:
        args += ["-P", str(pipeline)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    for row in csv.DictReader(io.StringIO(out)):
        return {
            "what": f"redis-benchmark {test}" + (f" -P {pipeline}" if pipeline > 1 else ""),
            "kind": "redis",
            "test": test,
            "pipeline": pipeline,
            "concurrency": concurrency,
            "throughput": float(row["rps"]),
            "p50_ms": float(row["p50_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"]),
        }
    raise RuntimeError(f"redis-benchmark printed nothing: {out!r}")


def gateway_run(args, gateway_pid, gateway_addr, workload, concurrency, count_syscalls,
                connections=None):
    connections = connections or min(concurrency, args.max_connections)
    bench_workload, options = VARIANTS.get(workload, (workload, []))
    command = [args.bench, "--target", gateway_addr, "--workload", bench_workload, *options,
               "--concurrency", str(concurrency), "--connections", str(connections),
               "--duration", f"{args.duration}s", "--warmup", f"{args.warmup}s",
               "--keys", str(args.keys), "--json", "--progress"]
    client_before = children_cpu_seconds()
    bench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu_start = counter = None
    errors = []
    # The benchmark marks the measured window on stderr.
    for line in bench.stderr:
        line = line.strip()
        if line == "bench: measuring":
            cpu_start = cpu_seconds(gateway_pid)
            counter = SyscallCounter(gateway_pid, count_syscalls)
        elif line == "bench: measured":
            cpu = cpu_seconds(gateway_pid) - cpu_start
            syscalls = counter.stop()
            rss_kib = status_kib(gateway_pid, "VmRSS")
        elif line:
            errors.append(line)
    out = bench.stdout.read()
    if bench.wait() != 0 or cpu_start is None:
        raise RuntimeError(f"{' '.join(command)} failed: {' '.join(errors)} {out}")
    client_cpu = children_cpu_seconds() - client_before
    report = json.loads(out)
    calls = max(report["calls"], 1)
    # The load generator's CPU over its whole run (warm-up and key writing included), per
    # measured call: what it takes from the cores the gateway and Redis share.
    total_calls = calls * (args.duration + args.warmup) / args.duration
    label, baseline = WORKLOADS[workload]
    return {
        "what": f"gateway {label}",
        "kind": "gateway",
        "workload": workload,
        "baseline": baseline,
        "concurrency": concurrency,
        "connections": connections,
        "throughput": report["throughput"],
        "calls": report["calls"],
        "p50_ms": report["latency_us"]["p50"] / 1e3,
        "p90_ms": report["latency_us"]["p90"] / 1e3,
        "p99_ms": report["latency_us"]["p99"] / 1e3,
        "p999_ms": report["latency_us"]["p999"] / 1e3,
        "errors": report["errors"],
        "cpu_us_per_call": cpu / calls * 1e6,
        "syscalls_per_call": None if syscalls is None else syscalls / calls,
        "rss_kib": rss_kib,
        "client_cpu_us_per_call": client_cpu / total_calls * 1e6,
        "client": "redis-gateway-bench",
    }


def h2load_run(args, gateway_pid, gateway_addr, concurrency, work):
    """KeyValue.Get with h2load (a C HTTP/2 client, light on CPU like redis-benchmark)."""
    connections = min(concurrency, args.max_connections)
    streams = max(concurrency // connections, 1)
    body = os.path.join(work, "get.bin")
    # KeyValue.Get{key:"bench:k:0"} as a length-prefixed gRPC message.
    key = b"bench:k:0"
    message = b"\x0a" + bytes([len(key)]) + key
    with open(body, "wb") as out:
        out.write(b"\x00" + len(message).to_bytes(4, "big") + message)
    requests = args.requests if concurrency > 1 else max(args.requests // 10, 1000)
    cpu_start = cpu_seconds(gateway_pid)
    counter = SyscallCounter(gateway_pid, args.count_syscalls)
    client_before = children_cpu_seconds()
    out = subprocess.run(
        ["h2load", "-n", str(requests), "-c", str(connections), "-m", str(streams), "-d", body,
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{gateway_addr}/redisgateway.v1.KeyValue/Get"],
        capture_output=True, text=True, check=True).stdout
    client_cpu = children_cpu_seconds() - client_before
    syscalls = counter.stop()
    cpu = cpu_seconds(gateway_pid) - cpu_start
    rps = float(re.search(r"([0-9.]+) req/s", out).group(1))
    succeeded = int(re.search(r"([0-9]+) succeeded", out).group(1))
    return {
        "what": "gateway KeyValue.Get (h2load)",
        "kind": "gateway",
        "workload": "get-h2load",
        "baseline": "GET",
        "concurrency": concurrency,
        "connections": connections,
        "throughput": rps,
        # h2load reports mean and spread, not percentiles.
        "mean_ms": parse_h2load_ms(re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)),
        "p50_ms": None,
        "p99_ms": None,
        "errors": requests - succeeded,
        "cpu_us_per_call": cpu / max(succeeded, 1) * 1e6,
        "syscalls_per_call": None if syscalls is None else syscalls / max(succeeded, 1),
        "rss_kib": status_kib(gateway_pid, "VmRSS"),
        "client_cpu_us_per_call": client_cpu / max(succeeded, 1) * 1e6,
        "client": "h2load",
    }


def parse_h2load_ms(text):
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_table(concurrency, rows, out, header=True):
    redis = {(row["test"], row["pipeline"]): row for row in rows if row["kind"] == "redis"}
    gateway_connections = next((row["connections"] for row in rows if row["kind"] == "gateway"), 0)
    if header:
        out.write(f"\n== {concurrency} in flight (redis-benchmark -c {concurrency}; gateway "
                  f"{gateway_connections} HTTP/2 connection(s))\n")
    out.write(f"{'what':<38} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7} "
              f"{'CPU µs/call':>12} {'syscalls/call':>14} {'RSS MiB':>8} {'client µs/call':>15}\n")
    for row in rows:
        base = redis.get((row.get("baseline") or row.get("test"), 1))
        ratio = f"{row['throughput'] / base['throughput']:.2f}x" if base else ""
        cpu = f"{row['cpu_us_per_call']:.1f}" if row.get("cpu_us_per_call") is not None else ""
        sys_ = row.get("syscalls_per_call")
        sys_ = f"{sys_:.2f}" if sys_ is not None else ("-" if row["kind"] == "gateway" else "")
        rss = f"{row['rss_kib'] / 1024:.1f}" if row.get("rss_kib") else ""
        client = row.get("client_cpu_us_per_call")
        client = f"{client:.1f}" if client is not None else ""
        p50 = f"{row['p50_ms']:.3f}" if row["p50_ms"] is not None else "-"
        p99 = f"{row['p99_ms']:.3f}" if row["p99_ms"] is not None else "-"
        if row["p50_ms"] is None and row.get("mean_ms") is not None:
            p50 = f"~{row['mean_ms']:.3f}"
        out.write(f"{row['what']:<38} {row['throughput']:>10.0f} {p50:>8} "
                  f"{p99:>8} {ratio:>7} {cpu:>12} {sys_:>14} {rss:>8} {client:>15}\n")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for row in results["rows"]:
        if row["kind"] == "redis":
            name = row["what"]
        elif row["workload"] in ("get", "set", "get-h2load"):
            name = row["what"]
        else:
            continue
        series.setdefault(name, []).append(row)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, rows) in enumerate(sorted(series.items())):
        rows.sort(key=lambda row: row["concurrency"])
        xs = [row["concurrency"] for row in rows]
        style = dict(linestyle="-" if name.startswith("gateway") else "--", marker="o",
                     color=colors[index % len(colors)], label=name)
        left.plot(xs, [row["throughput"] / 1e3 for row in rows], **style)
        with_p99 = [row for row in rows if row["p99_ms"] is not None]
        if with_p99:
            right.plot([row["concurrency"] for row in with_p99],
                       [row["p99_ms"] for row in with_p99], **style)
    for axis, title, unit in ((left, "Throughput", "thousand calls/s"), (right, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("calls in flight")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    # Pipelined redis-benchmark is an order of magnitude above the rest.
    left.set_yscale("log")
    right.set_yscale("log")
    left.legend(fontsize=8)
    machine = results["machine"]
    fig.suptitle(f"redis-gateway vs redis-benchmark, same Redis, one run — {machine['cpus']} CPUs, "
                 f"{machine['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workloads", nargs="+", choices=[w for w in WORKLOADS if w not in SPECIAL],
                        default=[w for w in WORKLOADS if w not in SPECIAL])
    parser.add_argument("--fanout", type=int, default=1000,
                        help="WatchExpirations streams of the fan-out run (0: none); a key is "
                             "deleted 50 times a second and each watcher gets each event")
    parser.add_argument("--idle-connections", type=int, default=10_000,
                        help="HTTP/2 connections of the idle-connections run (0: none); the "
                             "gateway's RSS is read while they are all open")
    parser.add_argument("--requests", type=int, default=200_000,
                        help="redis-benchmark requests per test (at 1 in flight: a tenth)")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--max-connections", type=int, default=8,
                        help="HTTP/2 connections of the gateway benchmark (fewer if fewer in flight)")
    parser.add_argument("--gateway", default=os.path.join(ROOT, "target/release/redis-gateway"))
    parser.add_argument("--bench", default=os.path.join(ROOT, "target/release/redis-gateway-bench"))
    parser.add_argument("--gateway-args", default="", help="extra gateway flags")
    parser.add_argument("--no-h2load", action="store_true",
                        help="skip the h2load cross-check of KeyValue.Get (skipped anyway "
                             "without h2load, Debian package nghttp2-client)")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--plot", help="draw throughput and p99 against concurrency here (PNG)")
    parser.add_argument("--from-json", help="only draw --plot from this earlier --json output")
    args = parser.parse_args()
    if args.from_json:
        with open(args.from_json) as saved:
            plot(json.load(saved), args.plot)
        return

    work = tempfile.mkdtemp(prefix="bench-")
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", work],
        stdout=subprocess.DEVNULL,
    )
    gateway = None
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "redis": subprocess.run(["redis-server", "--version"], capture_output=True,
                                    text=True).stdout.strip(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup,
                     "redis_benchmark_requests": args.requests, "keys": args.keys,
                     "value_bytes": 100},
        "rows": [],
    }
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(redis_port), "ping"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        rows_by_concurrency = {c: [] for c in args.concurrency}
        for concurrency in args.concurrency:
            requests = args.requests if concurrency > 1 else max(args.requests // 10, 1000)
            for test in ("GET", "SET"):
                for pipeline in (1, 16):
                    rows_by_concurrency[concurrency].append(
                        redis_benchmark(redis_port, test, concurrency, requests, pipeline))

        gateway_port = free_port()
        log_path = os.path.join(work, "gateway.log")
        with open(log_path, "w") as log:
            gateway = subprocess.Popen(
                [args.gateway, "--listen", f"127.0.0.1:{gateway_port}", "--redis-url",
                 f"redis://127.0.0.1:{redis_port}"] + args.gateway_args.split(),
                stderr=log, stdout=log,
            )
        deadline = time.time() + 30
        while "SERVING" not in open(log_path).read():
            if gateway.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the gateway did not start: {open(log_path).read()}")
            time.sleep(0.05)
        count_syscalls = args.count_syscalls = perf_works()
        use_h2load = shutil.which("h2load") is not None and not args.no_h2load
        for concurrency in args.concurrency:
            for workload in args.workloads:
                rows_by_concurrency[concurrency].append(
                    gateway_run(args, gateway.pid, f"127.0.0.1:{gateway_port}", workload,
                                concurrency, count_syscalls))
            # After the get workload wrote its keys (h2load reads one of them).
            if use_h2load and "get" in args.workloads:
                rows_by_concurrency[concurrency].append(
                    h2load_run(args, gateway.pid, f"127.0.0.1:{gateway_port}", concurrency, work))
        special = []
        if args.fanout:
            special.append(gateway_run(args, gateway.pid, f"127.0.0.1:{gateway_port}",
                                       "expiry-fanout", args.fanout, count_syscalls))
        if args.idle_connections:
            special.append(gateway_run(args, gateway.pid, f"127.0.0.1:{gateway_port}",
                                       "idle-connections", 64, count_syscalls,
                                       connections=args.idle_connections))
        results["gateway_peak_rss_kib"] = status_kib(gateway.pid, "VmHWM")
        # redis-benchmark once more: how much the machine drifted during the run.
        drift = redis_benchmark(redis_port, "GET", args.concurrency[-1], args.requests, 1)
        results["redis_get_at_end"] = drift["throughput"]

        for concurrency in args.concurrency:
            print_table(concurrency, rows_by_concurrency[concurrency], sys.stdout)
            results["rows"].extend(rows_by_concurrency[concurrency])
        if special:
            print(f"\n== expiry fan-out ({args.fanout} watchers, 50 deletions/s; latency: Delete "
                  f"sent to event received) and idle connections ({args.idle_connections}; RSS "
                  f"with all open)")
            print_table(None, special, sys.stdout, header=False)
            results["rows"].extend(special)
        print("\nratio: calls/s against redis-benchmark (not pipelined) at the same concurrency; CPU: "
              "the gateway's, per call, over the measured window; client: the load generator's "
              "CPU per call (the same cores run Redis, the gateway and the client)")
        print(f"gateway peak RSS {results['gateway_peak_rss_kib'] / 1024:.1f} MiB; "
              f"redis-benchmark GET -c {args.concurrency[-1]} at the end: "
              f"{drift['throughput']:.0f} calls/s (drift check); syscalls counted: "
              f"{'yes (perf)' if count_syscalls else 'no (perf not available)'}")
        if args.json:
            with open(args.json, "w") as out:
                json.dump(results, out, indent=1)
        if args.plot:
            plot(results, args.plot)
            print(f"plot: {args.plot}")
    finally:
        if gateway is not None:
            gateway.terminate()
            try:
                gateway.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gateway.kill()
        subprocess.run(["redis-cli", "-p", str(redis_port), "shutdown", "nosave"],
                       capture_output=True)
        redis.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
