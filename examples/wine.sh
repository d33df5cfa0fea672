#!/usr/bin/env bash
# Runs the red wine sweep end to end: installs what it needs, builds runner (release), trains
# every classifier of sweeps/wine-classifiers.toml with 5-fold CV and logs to ./mlflow.db.
# Extra arguments go to `runner sweep` (e.g. --jobs 1, --smoke, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
cargo build --release --locked --features "$RUNNER_FEATURES"
"$CARGO_TARGET_DIR/release/runner" sweep configs/wine.toml "$@"
