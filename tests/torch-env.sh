#!/usr/bin/env bash
# Sourced by tests/run.sh and examples/wine.sh: libtorch for the `torch` feature. tch 0.26 needs
# libtorch 2.13.0, which comes here only from the PyPI torch wheel; the lean install (no CUDA
# compute libraries, about 1.2 GB) is enough to build and run on CPU. The venv is made with the
# machine's own `python3`, whatever its version. Idempotent.
cache="${RUNNER_CACHE:-$HOME/.cache/runner}"
tv="$cache/torch-venv"
torch_dir() { ls -d "$tv"/lib/python3*/site-packages/torch 2>/dev/null | head -n 1; }
torch_ok() {
  local d
  d="$(torch_dir)"
  [ -n "$d" ] && [ -f "$d/lib/libtorch_cpu.so" ] &&
    grep -q "^Version: 2.13.0$" "$d"/../torch-2.13.0.dist-info/METADATA 2>/dev/null
}
if ! torch_ok; then
  echo "setup: creating $tv with torch 2.13.0 (lean: no CUDA compute libraries; a 530 MB download, once)" >&2
  rm -rf "$tv"
  python3 -m venv "$tv"
  "$tv/bin/pip" install -q --disable-pip-version-check --no-deps torch==2.13.0
  "$tv/bin/pip" install -q --disable-pip-version-check "cuda-toolkit[cudart,cupti]==13.0.3"
fi
LIBTORCH="$(torch_dir)"
export LIBTORCH
export RUNNER_FEATURES="${RUNNER_FEATURES:+$RUNNER_FEATURES,}torch"
