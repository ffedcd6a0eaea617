#!/usr/bin/env bash
# The test command: set-up (fast when nothing changed), then lint, types and the test suite.
#   tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
./setup.sh
V=${CASTWORK_VENV:-.venv}/bin
echo "== ruff"
"$V/ruff" check base voice media workers castwork tests bench examples
"$V/ruff" format --check base voice media workers castwork tests bench examples
echo "== mypy"
"$V/mypy"
echo "== pytest"
"$V/python" -m pytest -q "$@"
