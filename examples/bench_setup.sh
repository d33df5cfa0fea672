# Sourced by the benchmarks that compare runner with Python packages: builds runner (or takes
# RUNNER_BIN) and makes a venv of pinned packages once.
# usage: bench_setup VENV_NAME CHECK_PYTHON PACKAGE==VERSION...
# Sets: repo (the checkout), runner (the binary), py (the venv's python).
bench_setup() {
  local name=$1 check=$2
  shift 2
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  repo="$PWD"
  source tests/build-env.sh
  cargo build --release --locked --features "$RUNNER_FEATURES"
  runner="${RUNNER_BIN:-$CARGO_TARGET_DIR/release/runner}"
  local venv="${RUNNER_CACHE:-$HOME/.cache/runner}/$name"
  if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@"
  fi
  py="$venv/bin/python"
}
