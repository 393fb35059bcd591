#!/usr/bin/env bash
# Automatic failover with Patroni, checked: etcd, two Patroni nodes
# (deploy/patroni/node.yml: a synchronous standby, strict), and two ledger
# replicas on the multi-host URL. Writers with client tokens run on both
# replicas; the leader's Patroni and postmaster are killed (a node lost);
# Patroni promotes the standby. Checks: no acknowledged write lost, the
# log verifies, writes resume (how soon is printed), both replicas answer
# without a restart.
#
#   scripts/patroni-failover.sh [IMAGE_LEDGER_BINARY]
#
# Needs patroni, etcd (Debian: patroni, etcd-server) and PostgreSQL's
# server; run as root (PostgreSQL then runs as `postgres`) or as a user
# that may run it. Exits 1 at the first check that fails.
set -euo pipefail

bin="$(realpath "${1:-target/release/image-ledger}")"
here="$(cd "$(dirname "$0")/.." && pwd)"
pg_bin="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
work="$(mktemp -d)"
chmod 755 "$work"
pids=()
cleanup() {
  # The shell would report each background job it ends.
  exec 2>/dev/null
  touch "$work/stop" || true
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  pkill -9 -f "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
say() { echo "patroni-failover: $*"; }

etcd_port=$(free_port)
etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$(free_port)" >"$work/etcd.log" 2>&1 &
pids+=($!)

declare -A pg_port api_port
for node in node1 node2; do
  pg_port[$node]=$(free_port)
  api_port[$node]=$(free_port)
  mkdir -p "$work/$node"
  sed -e "s|@NAME@|$node|; s|@API_PORT@|${api_port[$node]}|g; s|@ETCD_PORT@|$etcd_port|" \
      -e "s|@PG_PORT@|${pg_port[$node]}|g; s|@DIR@|$work/$node|g; s|@BIN_DIR@|$pg_bin|" \
      "$here/deploy/patroni/node.yml" >"$work/$node/patroni.yml"
  chmod 700 "$work/$node"
  [[ $(id -u) -eq 0 ]] && chown -R postgres "$work/$node"
done
start_node() {
  as_postgres patroni "$work/$1/patroni.yml" >"$work/$1/patroni.log" 2>&1 &
  pids+=($!)
}
start_node node1
sleep 3
start_node node2

# Wait for a leader and a synchronous standby.
role_of() { curl -s "http://127.0.0.1:${api_port[$1]}/patroni" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("role",""))' 2>/dev/null || true; }
synced() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${api_port[$1]}/sync" 2>/dev/null || true; }
for _ in $(seq 120); do
  if [[ "$(synced node1)" == 200 || "$(synced node2)" == 200 ]]; then break; fi
  sleep 0.5
done
leader=""
for node in node1 node2; do
  [[ "$(role_of $node)" == "master" || "$(role_of $node)" == "primary" ]] && leader=$node
done
[[ -n "$leader" ]] || { say "no leader"; tail -20 "$work"/node*/patroni.log; exit 1; }
standby=$([[ $leader == node1 ]] && echo node2 || echo node1)
[[ "$(synced $standby)" == 200 ]] || { say "no synchronous standby"; tail -20 "$work"/node*/patroni.log; exit 1; }
say "leader $leader, synchronous standby $standby"

url="postgres://postgres@127.0.0.1:${pg_port[node1]},127.0.0.1:${pg_port[node2]}/postgres?target_session_attrs=read-write&connect_timeout=2"
seed=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
declare -a addrs
for replica in 0 1; do
  IMAGE_LEDGER_SIGNING_KEY_SEED=$seed RUST_LOG=warn "$bin" serve --data-dir "$work/replica$replica" \
    --addr 127.0.0.1:0 --database-url "$url" --image-quota 1000000 >"$work/replica$replica.out" 2>"$work/replica$replica.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q "^listening on" "$work/replica$replica.out" 2>/dev/null && break; sleep 0.1; done
  addrs[$replica]=$(awk '/^listening on/ {print $3}' "$work/replica$replica.out")
  [[ -n "${addrs[$replica]}" ]] || { say "replica $replica did not start"; cat "$work/replica$replica.log"; exit 1; }
done
owner=100000000001
"$bin" account register --addr "${addrs[0]}" "$owner" >/dev/null

# Writers: each registers images with client tokens, retrying a write
# until it is acknowledged; an acknowledged image id goes to its file.
writer() {
  local replica=$1 w=$2 i=0 out
  while [[ ! -e "$work/stop" ]]; do
    local token="r$replica-w$w-$i"
    while [[ ! -e "$work/stop" ]]; do
      if out=$("$bin" image register --addr "${addrs[$replica]}" --json --timeout 5 --account "$owner" \
          --region ap-guangzhou --name "$token" --platform CentOS --os-name "CentOS 7.9" \
          --client-token "$token" 2>/dev/null); then
        echo "$(date +%s.%N) $(python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])' <<<"$out")" \
          >>"$work/acked-$replica-$w"
        break
      fi
      sleep 0.1
    done
    i=$((i + 1))
  done
}
for replica in 0 1; do for w in 0 1; do writer $replica $w & pids+=($!); done; done
sleep 4

# A node lost: the leader's Patroni and its postmaster, at once.
# (Patroni runs under runuser as root: every process of it goes.)
postmaster=$(head -1 "$work/$leader/data/postmaster.pid")
killed=$(date +%s.%N)
pkill -9 -f "patroni $work/$leader/patroni.yml"
kill -9 "$postmaster"
say "killed $leader's Patroni and its postmaster ($postmaster)"
for _ in $(seq 120); do
  role=$(role_of "$standby")
  [[ "$role" == "master" || "$role" == "primary" ]] && break
  sleep 0.5
done
promoted=$(date +%s.%N)
say "$standby promoted $(python3 -c "print(round($promoted - $killed, 2))") s after the kill"
# Strict synchronous mode: with two nodes, commits wait for the lost node
# to rejoin as the new primary's standby. It comes back, rewinds, follows.
start_node "$leader"
for _ in $(seq 120); do
  [[ "$(synced "$leader")" == 200 ]] && break
  sleep 0.5
done
rejoined=$(date +%s.%N)
[[ "$(synced "$leader")" == 200 ]] || { say "$leader did not rejoin as a synchronous standby"; tail -20 "$work/$leader/patroni.log"; exit 1; }
say "$leader rejoined as the synchronous standby $(python3 -c "print(round($rejoined - $killed, 2))") s after the kill"
sleep 8
touch "$work/stop"
sleep 6

cat "$work"/acked-* | sort >"$work/acked"
total=$(wc -l <"$work/acked")
before=$(awk -v k="$killed" '$1 < k' "$work/acked" | wc -l)
resumed=$(awk -v k="$promoted" '$1 > k {print $1}' "$work/acked" | sort -n | head -1)
[[ -n "$resumed" ]] || { say "no write was acknowledged after the promotion"; exit 1; }
say "$before writes acknowledged before the kill, $total in all; writes resumed $(python3 -c "print(round($resumed - $killed, 2))") s after the kill"

# Every acknowledged image is on the new primary, seen by both replicas.
for replica in 0 1; do
  "$bin" image list --addr "${addrs[$replica]}" --account "$owner" --region ap-guangzhou --json --limit 100 >/dev/null ||
    { say "replica $replica does not answer after the failover"; exit 1; }
done
listed=$(as_postgres "$pg_bin/psql" -h 127.0.0.1 -p "${pg_port[$standby]}" -U postgres -d postgres -Atc \
  "SELECT convert_from(record, 'UTF8')::json->'payload'->>'image_id' FROM ledger_events WHERE convert_from(record, 'UTF8')::json->>'event_type' = 'ImageRegistered'")
lost=0
while read -r _ id; do
  grep -qx "$id" <<<"$listed" || { say "acknowledged $id is lost"; lost=$((lost + 1)); }
done <"$work/acked"
[[ $lost -eq 0 ]] || exit 1
say "0 of $total acknowledged writes lost"
"$bin" audit verify --database-url "postgres://postgres@127.0.0.1:${pg_port[$standby]}/postgres" --image-quota 1000000 |
  tail -1
say "every check passed"
