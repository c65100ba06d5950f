# redis-gateway. The two commands a newcomer needs:
#   make run    start the gateway on 127.0.0.1:50051; with its own embedded Redis unless
#               REDIS_URL, REDIS_HOST or REDIS_NODES names one
#   make test   run every test (each installs what is missing first), then the behaviour
#               suites again against a Redis Cluster of six redis-server processes
# Also: make lint (rustfmt, clippy, buf lint and buf breaking on proto/), make build (release
# binaries), make bench (the gateway against redis-benchmark on a private Redis, one run;
# BENCH_ARGS passes options to scripts/bench-report.py, e.g. BENCH_ARGS="--concurrency 1 8 64").

CARGO ?= cargo
# The behaviour suites that `make test` runs a second time against a Redis Cluster.
CLUSTER_SUITES = --test keyvalue --test transaction --test hash --test lock --test lock_hold \
	--test session --test session_ended --test watch

.PHONY: run test lint build bench

run:
	@scripts/install-deps.sh run
	@if [ -n "$$REDIS_URL" ] || [ -n "$$REDIS_HOST" ] || [ -n "$$REDIS_NODES" ]; then \
		$(CARGO) run --release; \
	else \
		$(CARGO) run --release -- --embedded-redis; \
	fi

test:
	@GRPCURL="$$(scripts/install-deps.sh test | tail -n 1)" && export GRPCURL && \
		echo "grpcurl: $$GRPCURL" && $(CARGO) test --all-targets && \
		echo "The behaviour suites again, against a Redis Cluster (3 primaries, 3 replicas):" && \
		GATEWAY_TEST_REDIS=cluster $(CARGO) test $(CLUSTER_SUITES)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	@BUF="$$(scripts/install-deps.sh lint | tail -n 1)" && export BUF && \
		echo "buf: $$BUF ($$("$$BUF" --version))" && "$$BUF" lint && echo "buf lint: ok" && \
		scripts/buf-breaking.sh
	scripts/lint-deploy.sh

build:
	$(CARGO) build --release --bins

bench:
	@scripts/install-deps.sh test >/dev/null
	$(CARGO) build --release --bins
	python3 scripts/bench-report.py $(BENCH_ARGS)
