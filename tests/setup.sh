#!/usr/bin/env bash
# Installs what runner and its tests need, idempotently: a Rust toolchain check, the C tool
# chain for bundled SQLite, and a Python venv with the real MLflow client (PyPI mlflow 3.17.2)
# that the integration tests read stores back with. Safe to run again: it skips what is there.
set -euo pipefail
cache="${RUNNER_CACHE:-$HOME/.cache/runner}"
mkdir -p "$cache"

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
# bindgen (the XGBoost and LightGBM sys crates) needs libclang.
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install Rust >= 1.85 (rustup, or your distribution's rustup package) and run again." >&2
  exit 1
fi

if [ "${1:-}" = "--runtime-only" ]; then
  exit 0
fi

venv="$cache/mlflow-venv"
if ! "$venv/bin/python" -c 'import mlflow, sys; sys.exit(mlflow.__version__ != "3.17.2")' >/dev/null 2>&1; then
  echo "setup: creating $venv with mlflow==3.17.2 (a few minutes, once)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check mlflow==3.17.2
fi
# onnxruntime (and numpy, which mlflow brings) for the ONNX export test.
if ! "$venv/bin/python" -c 'import onnxruntime, sys; sys.exit(onnxruntime.__version__ != "1.30.0")' >/dev/null 2>&1; then
  echo "setup: adding onnxruntime==1.30.0 to $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check onnxruntime==1.30.0
fi
echo "$venv/bin/python"
