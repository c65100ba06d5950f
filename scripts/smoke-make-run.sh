#!/usr/bin/env bash
# `make run`, a newcomer's first command, must start a gateway that answers: this starts it in
# the background (with its embedded Redis, on a free port via GATEWAY_LISTEN), waits until it
# serves, lists its services with grpcurl over reflection, and stops it with SIGTERM.
# CI (.ci/run) runs it after `make test`, which installed grpcurl.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log="$(mktemp)"
grpcurl="$("$root/scripts/install-deps.sh" test | tail -n 1)"

# Its own session and process group, so that SIGTERM reaches make, cargo and the gateway.
GATEWAY_LISTEN="127.0.0.1:$port" setsid make -C "$root" run >"$log" 2>&1 &
group=$!
stop() { kill -TERM -- "-$group" 2>/dev/null || true; }
trap stop EXIT

deadline=$((SECONDS + 900))
until grep -q "serving gRPC" "$log"; do
  if ! kill -0 "$group" 2>/dev/null || [ "$SECONDS" -gt "$deadline" ]; then
    echo "make run did not start a serving gateway:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  sleep 1
done
services="$("$grpcurl" -plaintext "127.0.0.1:$port" list)"
echo "$services"
for service in redisgateway.v1.KeyValue redisgateway.v1.Lock grpc.health.v1.Health; do
  grep -qx "$service" <<<"$services" || { echo "make run: $service is not served" >&2; exit 1; }
done
stop
trap - EXIT
for _ in $(seq 1 30); do
  kill -0 "$group" 2>/dev/null || { echo "make run: serves and stops cleanly"; exit 0; }
  sleep 1
done
echo "make run: the gateway did not stop within 30 s of SIGTERM" >&2
exit 1
