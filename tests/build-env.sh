#!/usr/bin/env bash
# Sourced by every script that builds runner: the cargo target folder outside the clone, the
# system packages (tests/setup.sh --runtime-only), and the build inputs of the XGBoost,
# LightGBM and libtorch backends (tests/gbm-env.sh, tests/torch-env.sh), which set
# RUNNER_FEATURES. Idempotent.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${RUNNER_CACHE:-$HOME/.cache/runner}/target}"
bash tests/setup.sh --runtime-only
source tests/gbm-env.sh
source tests/torch-env.sh
