#!/usr/bin/env bash
# The soak: the server's bounds under abuse and faults, with numbers
# (docs/PERFORMANCE.md keeps the latest output). Not part of `cargo test`:
# it takes several minutes and wants the release build.
#
#   scripts/soak.sh [image-ledger-bench soak flags…]
#
# Runs `image-ledger-bench soak` (SIGKILLs under load, stalled subscribers,
# a flood of idle HTTP/2 connections,
# half a million client tokens) and scripts/disk-full.sh (needs root and
# grpcurl; skipped, saying so, without them).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -q
echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
echo "== $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(date -u +%Y-%m-%dT%H:%MZ)"
ulimit -n "$(ulimit -Hn)"
target/release/image-ledger-bench soak "$@"
if command -v grpcurl >/dev/null 2>&1; then
  scripts/disk-full.sh target/release/image-ledger
else
  echo "disk-full: SKIPPED: grpcurl is not on PATH"
fi
