#!/usr/bin/env bash
# A full disk, for real: the server keeps its data on a small tmpfs, which a
# file then fills. Writes must be refused with UNAVAILABLE and health say
# NOT_SERVING; once the file is removed, writes must resume by themselves
# within 5 s, and every acknowledged write must be in the log.
#
#   scripts/disk-full.sh [path/to/image-ledger]
#
# Needs root (to mount the tmpfs) and grpcurl on PATH; where a tmpfs cannot
# be mounted it says so and exits 0.
set -euo pipefail

bin=${1:-target/debug/image-ledger}
work=$(mktemp -d)
mnt="$work/disk"
mkdir "$mnt"
if ! mount -t tmpfs -o size=16m tmpfs "$mnt" 2>/dev/null; then
  echo "disk-full: SKIPPED: cannot mount a tmpfs here (it needs root)"
  rm -rf "$work"
  exit 0
fi
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  umount "$mnt" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "disk-full: FAILED: $*"
  echo "--- server log"
  tail -20 "$work/server.log"
  exit 1
}

start() {
  coproc SERVER { exec "$bin" serve --addr 127.0.0.1:0 --data-dir "$mnt/data" --insecure-no-auth 2>>"$work/server.log"; }
  server_pid=$SERVER_PID
  local line
  read -r line <&"${SERVER[0]}"
  addr=${line#listening on }
}

health() {
  grpcurl -plaintext -d '{"service":"imageledger.v1.ImageLedger"}' "$addr" grpc.health.v1.Health/Check |
    sed -n 's/.*"status": "\(.*\)".*/\1/p'
}

acked="$work/acked"
: >"$acked"
# Registers account $1 with client token $1; records it when acknowledged.
register() {
  if "$bin" account register "$1" --client-token "t$1" --addr "http://$addr" >/dev/null 2>"$work/last.err"; then
    echo "$1" >>"$acked"
    return 0
  fi
  return 1
}

start
for id in $(seq 1001 1010); do register "$id" || fail "account $id on an empty disk"; done
[[ $(health) == SERVING ]] || fail "health before the disk filled: $(health)"
image=$("$bin" image register --addr "http://$addr" --json --account 1001 --region ap-guangzhou \
  --name web --platform CentOS --os-name "CentOS 7.9 64-bit" |
  sed -n 's/.*"image_id":"\([^"]*\)".*/\1/p')
[[ -n $image ]] || fail "no image registered on an empty disk"

# The reads that must answer whatever the writes do: each must succeed.
reads() {
  local what
  for what in \
    "imageledger.v1.AuditLog/GetLedgerHead {}" \
    "imageledger.v1.AuditLog/GetImageHistory {\"image_id\":\"$image\"}" \
    "imageledger.v1.AuditLog/GetImageAccessAsOf {\"image_id\":\"$image\",\"as_of_position\":\"11\"}" \
    "imageledger.v1.ImageLedger/DescribeImages {\"account_id\":\"1001\",\"region\":\"ap-guangzhou\"}" \
    "imageledger.v1.ImageLedger/AuthorizeImageUse {\"account_id\":\"1001\",\"image_id\":\"$image\",\"region\":\"ap-guangzhou\",\"use\":\"CREATE_INSTANCE\"}"; do
    grpcurl -plaintext -d "${what#* }" "$addr" "${what%% *}" >/dev/null 2>"$work/read.err" ||
      fail "$1: ${what%% *} did not answer: $(cat "$work/read.err")"
  done
}
reads "before the disk filled"

# Fill the disk, then write until three writes in a row are refused.
dd if=/dev/zero of="$mnt/filler" bs=64k 2>/dev/null || true
refused=0 id=2000
while ((refused < 3 && id < 2500)); do
  id=$((id + 1))
  if register "$id"; then refused=0; else refused=$((refused + 1)); fi
done
((refused == 3)) || fail "writes were still taken on a full disk"
grep -q "Unavailable" "$work/last.err" || fail "a refusal that is not UNAVAILABLE: $(cat "$work/last.err")"
[[ $(health) == NOT_SERVING ]] || fail "health on a full disk: $(health)"
for _ in 1 2 3; do reads "on a full disk"; done
echo "disk-full: disk full: writes refused (UNAVAILABLE), health NOT_SERVING, reads answered"

# Room again: the first write taken is timed from the removal.
rm "$mnt/filler"
freed=$(date +%s%N)
until register $((id + 1)); do
  (($(date +%s%N) - freed < 10000000000)) || fail "no write taken 10 s after the disk had room"
  sleep 0.05
done
resumed_ms=$((($(date +%s%N) - freed) / 1000000))
((resumed_ms < 5000)) || fail "writes resumed only after $resumed_ms ms"
[[ $(health) == SERVING ]] || fail "health after the disk had room: $(health)"
for next in $(seq $((id + 2)) $((id + 20))); do register "$next" || fail "account $next after recovery"; done
echo "disk-full: room again: writes resumed after $resumed_ms ms, health SERVING"

# Every acknowledged write is in the log, which verifies.
kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=
"$bin" audit verify --data-dir "$mnt/data" >"$work/verify.out" 2>&1 || fail "audit verify: $(cat "$work/verify.out")"
"$bin" audit export --data-dir "$mnt/data" >"$work/export.jsonl" 2>/dev/null
missing=0
while read -r account; do
  grep -q "\"account_id\":\"$account\"" "$work/export.jsonl" || { echo "acknowledged but not in the log: $account"; missing=$((missing + 1)); }
done <"$acked"
((missing == 0)) || fail "$missing acknowledged writes are missing"
echo "disk-full: PASSED: $(wc -l <"$acked") acknowledged writes all in the log; audit verify passes"
