#!/usr/bin/env bash
# Lock throughput and hand-off latency through the gateway (redis-gateway-bench), next to the
# command a hand-written Redis lock would send straight to the same Redis, in one run.
#
#   scripts/bench-lock.sh [seconds] [clients] [waiters]
#
# Prints: redis-benchmark `SET NX PX` (a bare acquisition, no fencing, no queue) at the same
# client count; uncontended Acquire+Release pairs/s through the gateway with their latency; and
# the contended hand-off latency of `waiters` clients queued on one lock. Needs redis-server
# and redis-tools; builds the release binaries.
set -euo pipefail
seconds="${1:-10}"
clients="${2:-64}"
waiters="${3:-8}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
gateway_port=$(free_port)

cleanup() {
  [ -n "${gateway_pid:-}" ] && kill "$gateway_pid" 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && cargo build --release --quiet --bins)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --daemonize yes >/dev/null
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

echo "== redis-benchmark SET key value NX PX 10000, $clients connections"
redis-benchmark -p "$redis_port" -c "$clients" -n 200000 -r 100000 \
  SET 'lock:__rand_int__' x NX PX 10000 2>/dev/null | tr '\r' '\n' \
  | grep -E "throughput summary|avg +min" -A1 | grep -v "^--" || true

"$root/target/release/redis-gateway" --listen "127.0.0.1:$gateway_port" \
  --redis-url "redis://127.0.0.1:$redis_port" 2>"$work/gateway.log" &
gateway_pid=$!
until grep -q "SERVING" "$work/gateway.log" 2>/dev/null; do sleep 0.1; done
bench="$root/target/release/redis-gateway-bench"
echo "== gateway Lock, uncontended Acquire+Release pairs, $clients clients (calls/s = pairs/s)"
"$bench" --target "127.0.0.1:$gateway_port" --workload lock --concurrency "$clients" \
  --duration "${seconds}s"
echo "== gateway Lock, contended: $waiters waiters on one lock (latency = hand-off)"
"$bench" --target "127.0.0.1:$gateway_port" --workload lock-contended --concurrency "$waiters" \
  --duration "${seconds}s"
echo "  gateway RSS after the run: $(ps -o rss= -p "$gateway_pid") KiB"
