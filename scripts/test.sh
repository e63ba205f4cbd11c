#!/usr/bin/env bash
# One command: set everything up and run every check: format, lint, types, proto lint,
# generated-code freshness, then the whole pytest suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
source scripts/ci-packages.sh
ensure_ci_packages
run() { "$UV" run --frozen --no-sync "$@"; }
start=$(date +%s)
echo "== ruff format --check"; run ruff format --check .
echo "== ruff check";          run ruff check .
echo "== mypy --strict";       run mypy
echo "== buf lint";            run buf lint
echo "== generated code";      run python scripts/gen_proto.py --check
# `python -m pytest`, not the `pytest` script: a spawned query worker re-runs its parent's
# main script before its own code, so under the script every worker would import pytest.
# Two processes (pytest-xdist; tests/parallel.py says how work is shared): the suite waits
# on servers and subprocesses much of the time. DPGATE_TEST_PROCESSES=0 runs it in one.
echo "== pytest";              run python -m pytest -n "${DPGATE_TEST_PROCESSES:-2}" --dist loadgroup "$@"
echo "== all checks passed in $(( $(date +%s) - start )) s"
