#!/usr/bin/env bash
# Logging throughput to a local `mlflow server` (the tests' MLflow 3.17.2, SQLite backend,
# proxied artifacts, 1 worker): runner's REST tracker (examples/bench_rest.rs) against the
# Python client's log_batch (examples/bench_server.py), same workload, same server, in
# alternation, twice each. RUNS (default 30) runs of 10 params, 5 tags and 3 metrics x 100
# steps, streamed (a call per step: runner's tracker queues and batches; the Python client
# synchronously, and with its own asynchronous logging) and in bulk (one call of 300 values);
# and runner streaming as the server store does (a number claimed per run, each end awaited).
#   bash examples/bench_server.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
bash tests/setup.sh >/dev/null
runs="${1:-30}"
venv="${RUNNER_CACHE:-$HOME/.cache/runner}/mlflow-venv"
cargo build --release --locked --example bench_rest
dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
setsid "$venv/bin/mlflow" server --backend-store-uri "sqlite:///$dir/server.db" \
  --artifacts-destination "$dir/artifacts" --host 127.0.0.1 --port "$port" --workers 1 \
  >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -- -$server 2>/dev/null; rm -rf "$dir"' EXIT
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.5; done
url="http://127.0.0.1:$port"
for round in 1 2; do
  for mode in streamed bulk; do
    "$CARGO_TARGET_DIR/release/examples/bench_rest" "$url" "$mode" "$runs"
    "$venv/bin/python" examples/bench_server.py "$url" "$mode" "$runs"
    if [ "$mode" = streamed ]; then
      "$venv/bin/python" examples/bench_server.py "$url" streamed-async "$runs"
      "$CARGO_TARGET_DIR/release/examples/bench_rest" "$url" store "$runs"
    fi
  done
done
