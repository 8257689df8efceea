#!/usr/bin/env bash
# Runs the Python client's tests against a real broker.
#
#   clients/python/scripts/test.sh [pytest args...]
#
# Creates clients/python/.venv when absent, installs the package with its
# `test` extra (pytest, opentelemetry-sdk, grpcio-tools, all pinned), runs
# pytest, and prints as its last line exactly
#
#   python: N passed, N failed
#
# exiting non-zero on any failure, and also when no test ran (pytest's exit
# code 5). The broker must already be built (server/dist/main.js); the tests
# start it themselves. Set JOBWIRE_PYTHON to pick the interpreter that
# creates the virtualenv (default python3).
set -uo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

summary() { echo "python: $1 passed, $2 failed"; }

if [ ! -f "$root/server/dist/main.js" ]; then
  echo "test.sh: $root/server/dist/main.js is missing; build the broker first (npx tsc -b server)" >&2
  summary 0 1
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  if ! "${JOBWIRE_PYTHON:-python3}" -m venv "$venv"; then
    echo "test.sh: could not create $venv" >&2
    summary 0 1
    exit 1
  fi
fi
py="$venv/bin/python"
if ! "$py" -m pip install --quiet --disable-pip-version-check -e "$here[test]"; then
  echo "test.sh: pip install failed" >&2
  summary 0 1
  exit 1
fi

report="$(mktemp -d)"
trap 'rm -rf "$report"' EXIT

cd "$here"
"$py" -m pytest --junitxml="$report/junit.xml" "$@"
status=$?

# Counts from the JUnit report: errors (a fixture that failed, say) count as
# failures, skips as neither.
read -r passed failed < <("$py" - "$report/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 0)
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = failures = errors = skipped = 0
for s in suites:
    tests += int(s.get("tests", 0))
    failures += int(s.get("failures", 0))
    errors += int(s.get("errors", 0))
    skipped += int(s.get("skipped", 0))
print(tests - failures - errors - skipped, failures + errors)
PY
)

if [ "$status" -eq 0 ] && [ "${failed:-0}" -eq 0 ] && [ "${passed:-0}" -gt 0 ]; then
  summary "$passed" 0
  exit 0
fi
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests" >&2
elif [ "$status" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then
  # pytest failed without reporting a failed test (interrupted, internal error).
  failed=1
fi
summary "${passed:-0}" "${failed:-0}"
exit 1
