#!/usr/bin/env bash
# Compares KeyValue.Get through the gateway (h2load, gRPC over HTTP/2) with GET straight to the
# same Redis (redis-benchmark, not pipelined), in one run, for several load shapes.
#
#   scripts/bench.sh [requests]
#
# Environment:
#   GATEWAYS   space-separated gateway binaries to compare (default: this checkout's release
#              build), each optionally followed by `:` and its own comma-separated flags, e.g.
#              "target/release/redis-gateway:--runtimes,1". Each runs alone against the same
#              Redis, one after the other.
#   SHAPES     h2load shapes as "connections x streams" pairs (default "8x8 64x1 2x32").
#   GATEWAY_ARGS  extra flags for every gateway (e.g. "--runtimes 1").
#   H2LOAD_HEADER  one more request header for h2load, e.g. "authorization: Bearer <token>"
#              with an auth file among the gateway's flags.
#
# Prints req/s and mean latency per shape, CPU time per call and RSS per gateway, and each
# figure's ratio to redis-benchmark GET at 64 connections. Needs redis-server, redis-tools and
# nghttp2-client (h2load); builds the release binary.
set -euo pipefail
requests="${1:-200000}"
shapes="${SHAPES:-8x8 64x1 2x32}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)

cleanup() {
  [ -n "${gateway_pid:-}" ] && kill "$gateway_pid" 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${GATEWAYS:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  GATEWAYS="$root/target/release/redis-gateway"
fi
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --daemonize yes >/dev/null
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
redis-cli -p "$redis_port" set bench "$(head -c 100 /dev/zero | tr '\0' x)" >/dev/null
# KeyValue.Get{key:"bench"} as a length-prefixed gRPC message.
printf '\x00\x00\x00\x00\x07\x0a\x05bench' >"$work/get.bin"

redis_benchmark() {
  redis-benchmark -p "$redis_port" -c 64 -n "$requests" GET bench 2>/dev/null | tr '\r' '\n' \
    | grep -o "throughput summary: [0-9.]*" | awk '{print $3}'
}

echo "== redis-benchmark GET, 64 connections, $requests requests"
redis_rps=$(redis_benchmark)
printf '%-40s %10.0f req/s\n' "redis-benchmark GET -c 64" "$redis_rps"

for entry in $GATEWAYS; do
  gateway="${entry%%:*}"
  own_args=""
  [ "$entry" != "$gateway" ] && own_args="${entry#*:}"
  gateway_port=$(free_port)
  # shellcheck disable=SC2086
  "$gateway" --listen "127.0.0.1:$gateway_port" --redis-url "redis://127.0.0.1:$redis_port" \
    ${GATEWAY_ARGS:-} ${own_args//,/ } 2>"$work/gateway.log" &
  gateway_pid=$!
  until grep -q "SERVING" "$work/gateway.log" 2>/dev/null; do sleep 0.1; done
  echo "== $gateway ${GATEWAY_ARGS:-} ${own_args//,/ }"
  for shape in $shapes; do
    connections="${shape%x*}"
    streams="${shape#*x}"
    cpu_before=$(awk '{print $14 + $15}' "/proc/$gateway_pid/stat")
    h2load -n "$requests" -c "$connections" -m "$streams" -d "$work/get.bin" \
      -H 'content-type: application/grpc' -H 'te: trailers' ${H2LOAD_HEADER:+-H "$H2LOAD_HEADER"} \
      "http://127.0.0.1:$gateway_port/redisgateway.v1.KeyValue/Get" >"$work/h2load.txt"
    cpu_after=$(awk '{print $14 + $15}' "/proc/$gateway_pid/stat")
    rps=$(grep -o "[0-9.]* req/s" "$work/h2load.txt" | head -1 | awk '{print $1}')
    succeeded=$(grep -o "[0-9]* succeeded" "$work/h2load.txt" | awk '{print $1}')
    mean=$(grep "time for request" "$work/h2load.txt" | awk '{print $6}')
    python3 - "$shape" "$rps" "$redis_rps" "$mean" "$cpu_before" "$cpu_after" "$succeeded" <<'PY'
import os, sys
shape, rps, redis_rps, mean, before, after, ok = sys.argv[1:]
ticks = os.sysconf("SC_CLK_TCK")
cpu_us = (int(after) - int(before)) / ticks * 1e6 / max(int(ok), 1)
print(f"  h2load -c/-m {shape:<6} {float(rps):10.0f} req/s  mean {mean:>9}  "
      f"{cpu_us:5.1f} µs CPU/call  ratio {float(rps) / float(redis_rps):.2f}")
PY
  done
  echo "  RSS after the run: $(ps -o rss= -p "$gateway_pid") KiB"
  kill "$gateway_pid"
  wait "$gateway_pid" 2>/dev/null || true
  gateway_pid=""
done
echo "== redis-benchmark GET again (drift check): $(redis_benchmark) req/s"
