#!/usr/bin/env bash
# Sourced by tests/run.sh and examples/wine.sh: libtorch for the `torch` feature. tch 0.26 needs
# libtorch 2.13.0, which comes here only from the PyPI torch wheel; the lean install (no CUDA
# compute libraries, about 1.2 GB) is enough to build and run on CPU. Idempotent.
cache="${RUNNER_CACHE:-$HOME/.cache/runner}"
tv="$cache/torch-venv"
if [ ! -f "$tv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so" ] || ! grep -q "^Version: 2.13.0$" "$tv"/lib/python3.11/site-packages/torch-2.13.0.dist-info/METADATA 2>/dev/null; then
  echo "setup: creating $tv with torch 2.13.0 (lean: no CUDA compute libraries; a 530 MB download, once)" >&2
  rm -rf "$tv"
  python3.11 -m venv "$tv" 2>/dev/null || python3 -m venv "$tv"
  "$tv/bin/pip" install -q --disable-pip-version-check --no-deps torch==2.13.0
  "$tv/bin/pip" install -q --disable-pip-version-check "cuda-toolkit[cudart,cupti]==13.0.3"
fi
export LIBTORCH="$(ls -d "$tv"/lib/python3*/site-packages/torch | head -n 1)"
export RUNNER_FEATURES="${RUNNER_FEATURES:+$RUNNER_FEATURES,}torch"
