#!/usr/bin/env bash
# The README's "With Tencent Cloud's own tools", run for real: a server
# with the cloud API door, two accounts with a key each, images from the
# image factory (gRPC), then every action through Tencent's Python SDK
# (sdk_walkthrough.py), the SDK over TLS with a CA made by openssl, and a
# short tccli session, each reply checked.
#
#   examples/tencentcloud/run.sh [IMAGE_LEDGER_BINARY]
#
# Needs python3 with requirements.txt's packages; openssl and tccli (from
# requirements-tccli.txt, in a virtual environment of its own) for their
# parts, which are skipped with a note without them (an error when
# REQUIRE_ALL is set, as CI does).
# Exits 1 at the first reply that is not what the README says.
set -euo pipefail

bin="$(realpath "${1:-target/release/image-ledger}")"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
server=""
tls_server=""
cleanup() {
  for pid in $server $tls_server; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

owner=100000000001
recipient=100000000002
cd "$work"
# One key in the config file, one in a key file of its own.
"$bin" auth new-cloud-key --account "$owner" >owner.key 2>owner.toml
"$bin" auth new-cloud-key --account "$recipient" --key-file recipient.secret >recipient.key 2>recipient.toml
grep -v '^#' owner.toml >ledger.toml
grep -v '^#' recipient.toml >>ledger.toml
key_of() { awk -v f="$2" '$1 == f":" {print $2}' "$1"; }

"$bin" --config ledger.toml serve --data-dir data --addr 127.0.0.1:0 \
  --cloud-api-addr 127.0.0.1:0 >server.out 2>server.log &
server=$!
for _ in $(seq 100); do
  grep -q "^cloud api listening on" server.out 2>/dev/null && break
  sleep 0.1
done
grpc=$(awk '/^listening on/ {print $3}' server.out)
cloud=$(awk '/^cloud api listening on/ {print $5}' server.out)
[[ -n "$grpc" && -n "$cloud" ]] || { echo "run.sh: the server did not start:" >&2; cat server.log >&2; exit 1; }
echo "ok: serving gRPC on $grpc and the cloud API on $cloud"

# Accounts and images come from the rest of the control plane, over gRPC.
for account in "$owner" "$recipient" $(seq 100000000101 100000000150); do
  "$bin" account register --addr "$grpc" "$account" >/dev/null
done
seq 100000000101 100000000150 >spares.txt
image_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["image_id"])'; }
image_a=$("$bin" image register --addr "$grpc" --json --account "$owner" --region ap-guangzhou \
  --name web --platform CentOS --os-name "CentOS 7.9 64-bit" --cloud-init | image_id)
image_b=$("$bin" image register --addr "$grpc" --json --account "$owner" --region ap-guangzhou \
  --name api --platform Ubuntu --os-name "Ubuntu 22.04 LTS 64-bit" | image_id)
echo "ok: the image factory registered $image_a and $image_b"

python3 "$here/sdk_walkthrough.py" "$cloud" \
  "$owner" "$(key_of owner.key SecretId):$(key_of owner.key SecretKey)" \
  "$recipient" "$(key_of recipient.key SecretId):$(key_of recipient.key SecretKey)" \
  "$image_a" "$image_b" spares.txt

# Who did it: the records name the key.
"$bin" audit history --addr "$grpc" --image "$image_a" >history.txt
grep -q "cloud key $(key_of owner.key SecretId)" history.txt ||
  { echo "run.sh: the history does not name the owner's key:" >&2; cat history.txt >&2; exit 1; }
echo "ok: audit history names the key behind each change"

# Over TLS, with the gRPC port's [tls] files: the SDK trusts a private CA
# with HttpProfile(certification=...).
if command -v openssl >/dev/null; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=ledger-ca -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout server.key -out server.csr 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 30 -out server.pem \
    -extfile <(printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n') 2>/dev/null
  chmod 600 ./*.key
  { cat ledger.toml; printf '[tls]\ncert = "server.pem"\nkey = "server.key"\n'; } >tls.toml
  "$bin" --config tls.toml serve --data-dir tls-data --addr 127.0.0.1:0 \
    --cloud-api-addr 127.0.0.1:0 >tls.out 2>tls.log &
  tls_server=$!
  for _ in $(seq 100); do
    grep -q "^cloud api listening on" tls.out 2>/dev/null && break
    sleep 0.1
  done
  tls_grpc=$(awk '/^listening on/ {print $3}' tls.out)
  tls_cloud=$(awk '/^cloud api listening on/ {print $5}' tls.out)
  "$bin" account register --addr "localhost:${tls_grpc##*:}" --tls-ca ca.pem "$owner" >/dev/null
  python3 - "localhost:${tls_cloud##*:}" "$(key_of owner.key SecretId)" "$(key_of owner.key SecretKey)" <<'PY'
import sys
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.cvm.v20170312 import cvm_client, models

endpoint, secret_id, secret_key = sys.argv[1:4]
def client(**http):
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=endpoint, **http))
    return cvm_client.CvmClient(credential.Credential(secret_id, secret_key), "ap-guangzhou", profile)
quota = client(protocol="https", certification="ca.pem").DescribeImageQuota(models.DescribeImageQuotaRequest())
if quota.ImageNumQuota != 500:
    sys.exit(f"run.sh: over TLS the quota was {quota.to_json_string()}")
try:
    client(protocol="http").DescribeImageQuota(models.DescribeImageQuotaRequest())
    sys.exit("run.sh: the TLS door answered plaintext HTTP")
except TencentCloudSDKException as err:
    if err.get_code() != "ClientNetworkError":
        sys.exit(f"run.sh: plaintext to the TLS door: {err.get_code()} {err.get_message()}")
print("ok: the SDK speaks to the door over TLS, trusting the CA it is given; plaintext gets no answer")
PY
  kill "$tls_server"
  wait "$tls_server" 2>/dev/null || true
  tls_server=""
elif [[ -n "${REQUIRE_ALL:-}" ]]; then
  echo "run.sh: openssl is not installed" >&2
  exit 1
else
  echo "note: openssl is not installed; the TLS part is skipped"
fi

if ! command -v tccli >/dev/null; then
  if [[ -n "${REQUIRE_ALL:-}" ]]; then
    echo "run.sh: tccli is not installed (pip install -r examples/tencentcloud/requirements-tccli.txt)" >&2
    exit 1
  fi
  echo "note: tccli is not installed; its part is skipped"
  exit 0
fi
export TENCENTCLOUD_SECRET_ID TENCENTCLOUD_SECRET_KEY
TENCENTCLOUD_SECRET_ID=$(key_of owner.key SecretId)
TENCENTCLOUD_SECRET_KEY=$(key_of owner.key SecretKey)
tc() { tccli "$@" --endpoint "http://$cloud" --region ap-guangzhou; }
tc cvm DescribeImages --ImageIds "[\"$image_b\"]" >listed.json
python3 -c 'import json,sys; r=json.load(open("listed.json")); sys.exit(0 if r["TotalCount"]==1 and r["ImageSet"][0]["ImageName"]=="api-v2" else f"tccli listed {r}")'
echo "ok: tccli lists the image"
tc cvm ModifyImageSharePermission --ImageId "$image_b" --AccountIds "[\"$recipient\"]" --Permission SHARE >/dev/null
tc cvm DescribeImageSharePermission --ImageId "$image_b" >shares.json
python3 -c "import json,sys; r=json.load(open('shares.json')); sys.exit(0 if [s['AccountId'] for s in r['SharePermissionSet']]==['$recipient'] else f'tccli shares {r}')"
echo "ok: tccli shares it"
set +e
tc cvm DeleteImages --ImageIds "[\"$image_b\"]" >refused.txt 2>&1
status=$?
set -e
if [[ $status -eq 0 ]] || ! grep -q "code:InvalidImageId.InShared" refused.txt; then
  echo "run.sh: tccli deleted a shared image, or was refused otherwise (exit $status):" >&2
  cat refused.txt >&2
  exit 1
fi
echo "ok: tccli is refused the delete with InvalidImageId.InShared (exit $status)"
echo "run.sh: every reply as the README says"
