# Container image of the redis-gateway server (the gRPC gateway only: no Redis inside, no
# load generator). Build and run:
#   docker build -t redis-gateway:0.1.0 .
#   docker run --rm -p 50051:50051 -e REDIS_URL=redis://cache.internal:6379/0 \
#     -e GATEWAY_AUTH_FILE=/etc/redis-gateway/auth.toml \
#     -v "$PWD/auth.toml:/etc/redis-gateway/auth.toml:ro" --read-only --stop-timeout 25 \
#     redis-gateway:0.1.0
# Every setting is an environment variable (see README.md, "Configuration"). The image listens
# on 0.0.0.0:50051, so it needs GATEWAY_AUTH_FILE (bearer tokens) before it serves; without
# one it stops at start (exit code 2) unless GATEWAY_AUTH=none is set explicitly, which this
# image never does. deploy/README.md has Compose files and the Helm chart.

# The build stage: Debian bookworm's Rust image, so the binary links against the same glibc
# as the runtime image below. 1.95 is the toolchain the project is developed and tested with
# (Cargo.toml's rust-version, 1.88, is the oldest it supports).
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own that only Cargo.toml, Cargo.lock, build.rs or
# proto/ invalidate: the same manifest with empty targets. build.rs compiles proto/ with protox
# (a Rust crate), so no protoc is needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src/bin \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/redis-gateway-bench.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin redis-gateway \
    && rm -rf src

# Then the sources. Their modification times come from the build context and may be older
# than the placeholders built above, so they are touched: cargo rebuilds by modification time.
COPY src ./src
RUN find src -type f -exec touch {} + \
    && cargo build --release --locked --bin redis-gateway \
    && install -D -m 0755 target/release/redis-gateway /out/redis-gateway

# The runtime stage: distroless "cc" (Debian 12) rather than debian:bookworm-slim, because it
# holds exactly what this binary needs (glibc, libgcc_s, CA certificates for rediss:// without
# REDIS_TLS_CA) and nothing else: no shell, no package manager, nothing for an intruder to use.
# Its "nonroot" tag runs as UID/GID 65532. Health is checked from outside the container
# (Kubernetes' native gRPC probes, or grpcurl), so the image has no HEALTHCHECK.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="redis-gateway" \
      org.opencontainers.image.description="A gRPC gateway in front of Redis" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/redis-gateway /usr/local/bin/redis-gateway

# Configuration by environment only. Not set here on purpose:
# - GATEWAY_AUTH_FILE (mount the auth file and point this at it) or GATEWAY_AUTH=none;
# - REDIS_URL (or REDIS_HOST / REDIS_MODE + REDIS_NODES), and REDIS_PASSWORD from a secret;
# - GATEWAY_METRICS_LISTEN: the metrics endpoint has no authentication, so it stays off
#   unless asked for (GATEWAY_METRICS_LISTEN=0.0.0.0:9464 serves it on the port below).
# GATEWAY_DRAIN_TIMEOUT is how long a stop waits for calls in flight: give `docker stop` (its
# default is 10 s) or the orchestrator more than that before it sends SIGKILL.
ENV GATEWAY_LISTEN=0.0.0.0:50051 \
    GATEWAY_DRAIN_TIMEOUT=15s \
    GATEWAY_LOG_FORMAT=json \
    RUST_LOG=info

# gRPC (GATEWAY_LISTEN) and Prometheus metrics (GATEWAY_METRICS_LISTEN, when set).
EXPOSE 50051 9464

# Nothing is written at run time: the root filesystem can be mounted read-only.
USER 65532:65532
# SIGTERM starts the graceful drain (a second one exits at once).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/redis-gateway"]
