#!/usr/bin/env bash
# The test command: installs what the tests need (tests/setup.sh), then runs every unit and
# integration test against the real MLflow client. Release profile, so the tests and
# `examples/wine.sh` share one build. Every test binary runs even when an earlier one fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
# The real MLflow client the tests read stores with.
RUNNER_MLFLOW_PYTHON="$(bash tests/setup.sh | tail -n 1)"
export RUNNER_MLFLOW_PYTHON
# The Python package, installed for tests/python_api.rs.
source tests/python-env.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --locked --no-fail-fast --features "$RUNNER_FEATURES" "$@" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary.
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
