#!/usr/bin/env bash
# Benchmarks of the core (not timed tests): the whole wine sweep's wall time and peak RSS,
# start-up to the first training, start-up of the binary, and the store write figure.
# Run: bash examples/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
cargo build --release --locked --features "$RUNNER_FEATURES" --bins --example bench_store --example bench_runs 2>/dev/null
bin="$CARGO_TARGET_DIR/release/runner"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB"
for config in configs/wine.toml configs/wine-regression.toml; do
  rm -f "$work/mlflow.db"
  ( cd "$work" && /usr/bin/time -f "%e %M" -o "$work/time" "$bin" sweep "$OLDPWD/$config" --json >"$work/report.json" 2>/dev/null )
  read -r wall rss < "$work/time"
  first=$(python3 -c "import json;print(round(json.load(open('$work/report.json'))['start_to_first_training_ms'],1))")
  runs=$(python3 -c "import json;print(len(json.load(open('$work/report.json'))['runs']))")
  echo "$config: $runs configs, wall ${wall} s, peak RSS $((rss / 1024)) MiB, start to first training ${first} ms"
done
start=$(date +%s%N); for _ in $(seq 20); do "$bin" --version >/dev/null; done; end=$(date +%s%N)
echo "runner --version: $(( (end - start) / 20000000 )) ms per start (mean of 20)"
"$CARGO_TARGET_DIR/release/examples/bench_store"
# `runner runs` on a store of 10,000 training runs (4 experiments), best of 5 each.
"$CARGO_TARGET_DIR/release/examples/bench_runs" "$work/runs.db" 10000
for args in "runs" "runs --json" "runs --sort accuracy --limit 10" "runs --experiment bench-2 --status finished"; do
  best=""
  for _ in 1 2 3 4 5; do
    start=$(date +%s%N); "$bin" $args --tracking-uri "sqlite:///$work/runs.db" >/dev/null; end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  echo "runner $args, 10,000 runs: ${best} ms (best of 5)"
done
