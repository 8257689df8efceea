#!/usr/bin/env bash
# Lints and type-checks the Python client: ruff (check and format) and
# mypy --strict over src/jobwire, the generated src/jobwire/v1 aside, with
# the versions pinned in requirements-test.txt (settings in pyproject.toml).
#
#   clients/python/scripts/lint.sh          # check; non-zero on any finding
#   clients/python/scripts/lint.sh --fix    # apply ruff's fixes and formatting first
#
# Uses the virtualenv at clients/python/.venv (created when absent), the same
# one scripts/test.sh uses. Set JOBWIRE_PYTHON to pick the interpreter that
# creates it (default python3).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
venv="$here/.venv"

if [ ! -x "$venv/bin/python" ]; then
  "${JOBWIRE_PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check -e "$here[test]"

cd "$here"
if [ "${1:-}" = "--fix" ]; then
  "$py" -m ruff check --fix src/jobwire
  "$py" -m ruff format src/jobwire
fi
status=0
"$py" -m ruff check src/jobwire || status=1
"$py" -m ruff format --check src/jobwire || status=1
"$py" -m mypy --strict || status=1
if [ "$status" -eq 0 ]; then
  echo "python lint: ruff and mypy --strict clean"
fi
exit "$status"
