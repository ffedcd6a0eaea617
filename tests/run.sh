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
# Two processes (pytest-xdist), a test file each at a time: many tests wait on real time (audio
# played at speaking pace, Redis outages, worker restarts), and the other process uses that
# time. 759 s -> ~450 s on this project's 2-core machine. CASTWORK_TEST_WORKERS=0: one process.
"$V/python" -m pytest -q -n "${CASTWORK_TEST_WORKERS:-2}" --dist loadfile "$@"
