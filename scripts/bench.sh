#!/usr/bin/env bash
# Compares KeyValue.Get through the gateway (h2load, gRPC over HTTP/2) with GET straight to
# the same Redis (redis-benchmark, not pipelined), at the same concurrency, in one run.
#   scripts/bench.sh [requests] [concurrency]
# Needs redis-server, redis-tools and nghttp2-client (h2load); builds the release binary.
set -euo pipefail
requests="${1:-200000}"
clients="${2:-50}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
gateway_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cleanup() {
  [ -n "${gateway_pid:-}" ] && kill "$gateway_pid" 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && cargo build --release --quiet)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --daemonize yes >/dev/null
sleep 0.3
redis-cli -p "$redis_port" set bench "$(head -c 100 /dev/zero | tr '\0' x)" >/dev/null
"$root/target/release/redis-gateway" --listen "127.0.0.1:$gateway_port" \
  --redis-url "redis://127.0.0.1:$redis_port" 2>"$work/gateway.log" &
gateway_pid=$!
sleep 1

# KeyValue.Get{key:"bench"} as a length-prefixed gRPC message.
printf '\x00\x00\x00\x00\x07\x0a\x05bench' >"$work/get.bin"

echo "== redis-benchmark GET, $clients connections, $requests requests"
redis-benchmark -p "$redis_port" -c "$clients" -n "$requests" GET bench 2>/dev/null \
  | tr '\r' '\n' | grep -E "throughput summary|avg|^ +[0-9]" | tail -3 | tee "$work/redis.txt"
echo "== h2load KeyValue/Get, $clients connections x 1 stream, $requests requests"
h2load -n "$requests" -c "$clients" -m 1 -d "$work/get.bin" \
  -H 'content-type: application/grpc' -H 'te: trailers' \
  "http://127.0.0.1:$gateway_port/redisgateway.v1.KeyValue/Get" \
  | grep -E "finished in|requests:|time for request" | tee "$work/gateway.txt"
echo "== gateway memory: $(ps -o rss= -p "$gateway_pid") KiB RSS"

redis_rps=$(grep -o "summary: [0-9.]*" "$work/redis.txt" | awk '{print $2}')
gateway_rps=$(grep -o "[0-9.]* req/s" "$work/gateway.txt" | awk '{print $1}')
python3 -c "print(f'== ratio gateway/redis: {float($gateway_rps)/float($redis_rps):.2f} ({float($gateway_rps):.0f} vs {float($redis_rps):.0f} req/s)')"
