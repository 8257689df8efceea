#!/usr/bin/env bash
# Regenerates the Python stubs in src/jobwire/v1/ from proto/jobwire/v1/*.proto
# with the grpcio-tools pinned in requirements-generate.txt. The output is
# committed, and CI reruns this script and fails on any difference, so it must
# be byte-for-byte reproducible: one pinned generator, sorted inputs, paths
# relative to proto/ (they are written into the files), and nothing from the
# machine (time, user, absolute paths) reaching the output.
#
# Uses the virtualenv at clients/python/.venv (created when absent), the same
# one scripts/test.sh uses. Set JOBWIRE_PYTHON to pick the interpreter that
# creates it (default python3).
set -euo pipefail
export LC_ALL=C

here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
out="$here/src/jobwire/v1"

if [ ! -x "$venv/bin/python" ]; then
  "${JOBWIRE_PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
# A no-op (and no network) when the pinned version is already installed.
"$py" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-generate.txt"

# google/protobuf/*.proto (Duration, Timestamp) ship inside grpcio-tools.
wkt="$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$root/proto"
mapfile -t protos < <(find jobwire/v1 -maxdepth 1 -name '*.proto' | sort)
if [ "${#protos[@]}" -eq 0 ]; then
  echo "generate.sh: no .proto files under proto/jobwire/v1" >&2
  exit 1
fi
"$py" -m grpc_tools.protoc \
  --proto_path=. \
  --proto_path="$wkt" \
  --python_out="$tmp" \
  --pyi_out="$tmp" \
  --grpc_python_out="$tmp" \
  "${protos[@]}"

# Replace the generated files only; v1/__init__.py is written by hand.
mkdir -p "$out"
find "$out" -maxdepth 1 -type f \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) -delete
cp "$tmp"/jobwire/v1/* "$out"/
echo "generated $(find "$tmp/jobwire/v1" -type f | wc -l) files into ${out#"$root"/}"
