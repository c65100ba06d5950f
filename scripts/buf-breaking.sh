#!/usr/bin/env bash
# Checks proto/ for breaking changes with `buf breaking` (rules: buf.yaml's `breaking` section),
# against the contract as it was before the latest change to proto/:
#   scripts/buf-breaking.sh        proto/ differs from HEAD (uncommitted edits): against HEAD;
#                                  otherwise against the latest commit before the last commit
#                                  that changed proto/, so the last committed change is checked
#   scripts/buf-breaking.sh REF    against the last commit of REF (e.g. main) that changed proto/
# Needs the git history (a full clone; a shallow one is unshallowed first). BUF names the buf
# binary; unset, scripts/install-deps.sh lint provides it.
set -euo pipefail
cd "$(dirname "$0")/.."

buf="${BUF:-}"
[ -n "$buf" ] || buf="$(scripts/install-deps.sh lint | tail -n 1)"

if [ "$(git rev-parse --is-shallow-repository)" = "true" ]; then
  echo "buf breaking: shallow clone, fetching the history it needs" >&2
  git fetch --quiet --unshallow || {
    echo "buf breaking: needs the git history: run 'git fetch --unshallow'" >&2
    exit 1
  }
fi

if [ $# -ge 1 ]; then
  against="$(git log -1 --format=%H "$1" -- proto)"
  what="the last commit of $1 that changed proto/"
elif ! git diff --quiet HEAD -- proto \
  || [ -n "$(git ls-files --others --exclude-standard -- proto)" ]; then
  against="$(git rev-parse HEAD)"
  what="HEAD (proto/ has uncommitted changes)"
else
  last="$(git log -1 --format=%H -- proto)"
  against=""
  if [ -n "$last" ] && git rev-parse -q --verify "$last^" >/dev/null; then
    against="$(git log -1 --format=%H "$last^" -- proto)"
  fi
  what="proto/ as it was before its last change, ${last:0:12}"
fi
if [ -z "$against" ]; then
  echo "buf breaking: no earlier proto/ to compare with; skipped"
  exit 0
fi

# The repository's object store: .git in a clone, the shared one in a `git worktree`.
git_dir="$(git rev-parse --path-format=absolute --git-common-dir)"
echo "buf breaking: proto/ against ${against:0:12}, $what"
"$buf" breaking proto --against "$git_dir#format=git,ref=$against,subdir=proto"
echo "buf breaking: no breaking changes"
