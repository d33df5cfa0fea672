#!/usr/bin/env bash
# Sourced by tests/run.sh and examples/wine.sh: makes the XGBoost and LightGBM features
# buildable. A Python 3.12 venv (PyPI's xgboost >= 3.3 needs 3.12) holds the xgboost-cpu wheel,
# whose libxgboost.so the xgb crate links (no C++ build), a CMake >= 3.28 for LightGBM's bundled
# source (Debian 12 has 3.25), and the Python packages the tests compare predictions with.
# Idempotent: a complete venv is reused.
cache="${RUNNER_CACHE:-$HOME/.cache/runner}"
gbm="$cache/gbm-venv"
if ! "$gbm/bin/python" -c 'import xgboost, lightgbm, numpy, sys; sys.exit(not (xgboost.__version__ == "3.4.1" and lightgbm.__version__ == "4.7.0"))' >/dev/null 2>&1; then
  py312=""
  for c in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    if command -v "$c" >/dev/null 2>&1; then py312="$c"; break; fi
  done
  if [ -z "$py312" ]; then
    echo "setup: Python 3.12 is needed for the XGBoost wheel (xgboost >= 3.3 on PyPI); install python3.12 (pyenv or your distribution) and run again" >&2
    exit 1
  fi
  echo "setup: creating $gbm with xgboost-cpu 3.4.1, lightgbm 4.7.0, cmake (once)" >&2
  rm -rf "$gbm"
  "$py312" -m venv "$gbm"
  "$gbm/bin/pip" install -q --disable-pip-version-check xgboost-cpu==3.4.1 lightgbm==4.7.0 "cmake>=3.28" numpy
fi
site="$("$gbm/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export XGBOOST_LIB_DIR="$site/xgboost/lib"
# The wheel's library names itself libxgboost.so.3.
[ -e "$XGBOOST_LIB_DIR/libxgboost.so.3" ] || ln -s libxgboost.so "$XGBOOST_LIB_DIR/libxgboost.so.3"
export CMAKE="$gbm/bin/cmake"
export RUNNER_GBM_PYTHON="$gbm/bin/python"
export RUNNER_FEATURES="xgboost,lightgbm"
