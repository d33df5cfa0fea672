#!/usr/bin/env bash
# Sourced by tests/run.sh and examples/wine.sh: makes the XGBoost and LightGBM features
# buildable with the machine's own `python3` (Debian 12's 3.11, Debian 13's 3.13), no second
# interpreter. Idempotent: what is complete is reused.
# - libxgboost.so 3.4.1, which the xgb crate links, is unpacked from PyPI's xgboost-cpu wheel
#   with the libgomp it was built with. That wheel declares Python >= 3.12 but holds plain C
#   libraries, so pip only downloads it (for a 3.12 tag) and never installs it.
# - A venv from `python3` holds CMake >= 3.28 for LightGBM's bundled source (Debian 12 has
#   3.25) and the Python packages the tests compare predictions with: xgboost-cpu 3.2.0 (the
#   newest that installs on 3.11; it loads runner's XGBoost 3.4 JSON models), lightgbm 4.7.0
#   and pandas.
cache="${RUNNER_CACHE:-$HOME/.cache/runner}"
gbm="$cache/gbm-venv"
xgb_root="$cache/xgboost-3.4.1"
xgb_lib="$xgb_root/xgboost/lib"
if ! "$gbm/bin/python" -c 'import xgboost, lightgbm, numpy, sys; sys.exit(not (xgboost.__version__ == "3.2.0" and lightgbm.__version__ == "4.7.0"))' >/dev/null 2>&1 || [ ! -x "$gbm/bin/cmake" ]; then
  echo "setup: creating $gbm with xgboost-cpu 3.2.0, lightgbm 4.7.0, cmake (once)" >&2
  rm -rf "$gbm"
  python3 -m venv "$gbm"
  "$gbm/bin/pip" install -q --disable-pip-version-check xgboost-cpu==3.2.0 lightgbm==4.7.0 "cmake>=3.28" numpy
fi
# pandas, for the test that reads the native files on raw DataFrame columns by name.
if ! "$gbm/bin/python" -c 'import pandas, sys; sys.exit(pandas.__version__ != "3.1.1")' >/dev/null 2>&1; then
  echo "setup: adding pandas to $gbm" >&2
  "$gbm/bin/pip" install -q --disable-pip-version-check pandas==3.1.1
fi
if [ ! -f "$xgb_root/complete" ]; then
  echo "setup: unpacking libxgboost.so from the xgboost-cpu 3.4.1 wheel into $xgb_root (once)" >&2
  wheels="$(mktemp -d)"
  "$gbm/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 xgboost-cpu==3.4.1 -d "$wheels"
  rm -rf "$xgb_root"
  # The shared libraries in the wheel's layout: libxgboost.so finds its libgomp through its
  # RPATH, $ORIGIN/../../xgboost_cpu.libs.
  "$gbm/bin/python" - "$wheels"/xgboost_cpu-3.4.1-*.whl "$xgb_root" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith(".so") or ".so." in name:
            z.extract(name, out)
PY
  touch "$xgb_root/complete"
  rm -rf "$wheels"
fi
export XGBOOST_LIB_DIR="$xgb_lib"
# The wheel's library names itself libxgboost.so.3.
[ -e "$XGBOOST_LIB_DIR/libxgboost.so.3" ] || ln -s libxgboost.so "$XGBOOST_LIB_DIR/libxgboost.so.3"
export CMAKE="$gbm/bin/cmake"
export RUNNER_GBM_PYTHON="$gbm/bin/python"
export RUNNER_FEATURES="xgboost,lightgbm"
