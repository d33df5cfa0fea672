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

# Sourced after tests/build-env.sh by the benchmarks that run PyTorch in Python: the venv of
# tests/torch-env.sh (whose wheel gives runner its libtorch) with what Python's `torch` imports
# added once (its pure-Python and CUDA library dependencies, about 3 GB), and PACKAGES.
# usage: torch_python CHECK_IMPORTS [PACKAGE==VERSION...]   Sets: py.
torch_python() {
  local check=$1
  shift
  py="$(dirname "$(dirname "$(dirname "$(dirname "$LIBTORCH")")")")/bin/python"
  if ! "$py" -c "import torch, $check" >/dev/null 2>&1; then
    echo "adding Python's torch and $check to $(dirname "$(dirname "$py")") (once)" >&2
    "$(dirname "$py")/pip" install -q --disable-pip-version-check typing_extensions filelock sympy networkx jinja2 fsspec numpy \
      nvidia-cudnn-cu13==9.20.0.48 nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.29.7 nvidia-nvshmem-cu13==3.4.5 \
      "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3" "$@"
  fi
}
