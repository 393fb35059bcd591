#!/usr/bin/env bash
# Generates the Python stubs from the proto with grpcio-tools, then runs
# the example against a server.
#
#   pip install -r examples/python/requirements.txt
#   examples/python/run.sh [ADDR]      # ADDR defaults to localhost:50051
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto="$here/../../proto"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
python3 -m grpc_tools.protoc -I "$proto" --python_out="$out" --grpc_python_out="$out" \
  "$proto/imageledger/v1/ledger.proto" "$proto/imageledger/v1/audit.proto"
PYTHONPATH="$out" python3 "$here/share.py" "${1:-localhost:50051}"
