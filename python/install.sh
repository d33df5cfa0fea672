#!/usr/bin/env bash
# Builds the Python package `runner_ml` (PyO3 + maturin, abi3: CPython >= 3.9) with the CLI's
# backends and installs it, idempotently:
#   bash python/install.sh                 # into the active virtualenv, else into
#                                          # ~/.cache/runner/python-venv (created, with pandas)
#   bash python/install.sh /path/to/python # into that interpreter's environment
# Prints the interpreter it installed into, last. The build shares the CLI's cargo target
# folder and compiled dependencies (tests/build-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
cache="${RUNNER_CACHE:-$HOME/.cache/runner}"

build="$cache/maturin-venv"
if ! "$build/bin/maturin" --version 2>/dev/null | grep -q "^maturin 1.16.0$"; then
  echo "install: creating $build with maturin 1.16.0 (once)" >&2
  rm -rf "$build"
  python3 -m venv "$build"
  "$build/bin/pip" install -q --disable-pip-version-check maturin==1.16.0
fi

if [ -n "${1:-}" ]; then
  py="$1"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
  py="$VIRTUAL_ENV/bin/python"
else
  venv="$cache/python-venv"
  if ! "$venv/bin/python" -c 'import pandas, pyarrow' >/dev/null 2>&1; then
    echo "install: creating $venv with pandas and pyarrow (once)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check pandas==3.1.1 pyarrow==26.0.1
  fi
  py="$venv/bin/python"
fi

# The networks' helper, the only program that links libtorch, goes into the wheel beside the
# module (runner_ml/__init__.py points runner at it).
rm -f python/runner_ml/runner-torch
if [[ ",${RUNNER_FEATURES:-}," == *",torch,"* ]]; then
  cargo build --release --features "$RUNNER_FEATURES" --bin runner-torch >&2
  cp "${CARGO_TARGET_DIR:-target}/release/runner-torch" python/runner_ml/runner-torch
fi

wheels="$cache/wheels"
rm -rf "$wheels"
# `--compatibility linux`: the module links the machine's libtorch and libxgboost (found by
# rpath, as the CLI does), so the wheel is for this machine, not a manylinux one.
"$build/bin/maturin" build --release --manifest-path python/Cargo.toml \
  --features "$RUNNER_FEATURES" --compatibility linux --interpreter "$py" --out "$wheels" >&2
"$py" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheels"/runner_ml-*.whl
"$py" -c 'import runner_ml' >&2
echo "$py"
