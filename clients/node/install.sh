#!/usr/bin/env bash
# Installs what the Node.js example needs, when it is missing:
#   - Node.js (18 or later) and npm from Debian's packages (`apt-get install -y nodejs npm`,
#     with sudo when not root), when `node` is not on PATH;
#   - the pinned dependencies of package-lock.json (`npm ci`) into clients/node/node_modules,
#     when it is missing or was installed from another package.json / package-lock.json.
# Safe to run again: it does nothing when all is in place. tests/node_example.rs runs it
# before the example.
#
# Usage: clients/node/install.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# What node_modules was installed from: the hash of package.json and package-lock.json.
stamp="$here/node_modules/.installed-from"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    sudo "$@"
  fi
}

# One install at a time (two test runs starting together), when flock is there.
if command -v flock >/dev/null 2>&1; then
  exec 9<"${BASH_SOURCE[0]}"
  flock 9
fi

if ! command -v node >/dev/null 2>&1; then
  echo "install.sh: installing Node.js and npm (Debian packages)" >&2
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
elif ! command -v npm >/dev/null 2>&1; then
  echo "install.sh: installing npm (Debian package)" >&2
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q npm
fi

if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
  echo "install.sh: Node.js $(node --version) is too old: the example needs 18 or later" >&2
  exit 1
fi

wanted="$(cd "$here" && cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ ! -d "$here/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  echo "install.sh: npm ci in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund)
  printf '%s\n' "$wanted" >"$stamp"
fi
