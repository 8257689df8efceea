#!/usr/bin/env bash
# Runs the Go client's checks: go vet, then every test against a real broker
# (node server/dist/main.js with embedded Postgres, started by the tests).
# The broker must be built first (npx tsc -b server; CI does it).
#
# The last line printed is always `go: N passed, N failed` (test functions
# and subtests). Exits non-zero on any failure, vet finding or build error.
set -uo pipefail
cd "$(dirname "$0")/.."
repo_root=$(cd ../.. && pwd)

summary() { echo "go: $1 passed, $2 failed"; }

if [ ! -f "$repo_root/server/dist/main.js" ]; then
  echo "server/dist/main.js is missing: build the broker first (npx tsc -b server)" >&2
  summary 0 1
  exit 1
fi

if ! go mod download; then
  echo "go mod download failed" >&2
  summary 0 1
  exit 1
fi

if ! go vet ./...; then
  echo "go vet failed" >&2
  summary 0 1
  exit 1
fi

# Build the summariser first, so a broken tool is not mistaken for test
# failures.
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
if ! go build -o "$tool/testsummary" ./internal/tools/testsummary; then
  summary 0 1
  exit 1
fi

go test -count=1 -json -timeout 10m ./... 2>&1 | "$tool/testsummary"
status=("${PIPESTATUS[@]}")
# go test's own status catches what the summary cannot (a crashed binary).
if [ "${status[0]}" -ne 0 ] || [ "${status[1]}" -ne 0 ]; then
  exit 1
fi
