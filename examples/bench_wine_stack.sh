#!/usr/bin/env bash
# Issue 19's wine-sweep ratio: runner's whole wine sweep (configs/wine.toml, 14 configs, the
# default jobs) against the same configs in the Python stack with MLflow logging
# (examples/bench_wine_stack.py), alternated, ROUNDS times (default 2), each in a fresh store.
# Prints wall time, CPU use (of one core: 200% is both cores busy) and peak RSS from
# /usr/bin/time, and the ratio per round. Python needs torch, scikit-learn, xgboost, lightgbm
# and mlflow: the first run adds them to the venv of tests/torch-env.sh, as bench_torch.sh does
# (about 3 GB). Runs by hand, not in CI. Run: bash examples/bench_wine_stack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
source examples/bench_setup.sh
torch_python "sklearn, xgboost, lightgbm, mlflow, matplotlib" \
  mlflow==3.17.2 scikit-learn==1.9.1 lightgbm==4.7.0 xgboost-cpu==3.2.0
cargo build --release --locked --features "$RUNNER_FEATURES" --bins 2>/dev/null
bin="$CARGO_TARGET_DIR/release/runner"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The red wine as runner's ETL v1 writes it: the Python side reads the same table.
mkdir "$work/etl"
(cd "$work/etl" && "$bin" sweep "$OLDPWD/configs/wine.toml" --only gaussian-nb >/dev/null 2>&1)
"$bin" --tracking-uri "sqlite:///$work/etl/mlflow.db" reload-etl v1 --out "$work/wine.csv" >/dev/null
echo "machine: $(nproc) cores; $("$py" -c 'import sklearn, xgboost, lightgbm, torch, mlflow; print(f"scikit-learn {sklearn.__version__}, xgboost {xgboost.__version__}, lightgbm {lightgbm.__version__}, torch {torch.__version__}, mlflow {mlflow.__version__}")')"
ratios=()
for round in $(seq "${ROUNDS:-2}"); do
  mkdir "$work/runner$round"
  (cd "$work/runner$round" && /usr/bin/time -f "%e %P %M" -o time "$bin" sweep "$OLDPWD/configs/wine.toml" --json >report.json 2>/dev/null)
  read -r r_wall r_cpu r_rss <"$work/runner$round/time"
  best=$("$py" -c "import json; r = json.load(open('$work/runner$round/report.json'))['runs']; b = max(r, key=lambda x: x['metrics']['accuracy']['mean']); print(b['name'], round(b['metrics']['accuracy']['mean'], 4))")
  echo "round $round runner: wall ${r_wall} s, CPU ${r_cpu}, peak RSS $((r_rss / 1024)) MiB, best $best"
  /usr/bin/time -f "%e %P %M" -o "$work/py$round.time" "$py" examples/bench_wine_stack.py "$work/wine.csv" "$work/py$round" >"$work/py$round.json" 2>"$work/py$round.err" ||
    { tail -n 20 "$work/py$round.err"; exit 1; }
  read -r p_wall p_cpu p_rss <"$work/py$round.time"
  echo "round $round Python stack: wall ${p_wall} s, CPU ${p_cpu}, peak RSS $((p_rss / 1024)) MiB, $(cat "$work/py$round.json")"
  ratio=$("$py" -c "print(f'{$r_wall / $p_wall:.4f}')")
  ratios+=("$ratio")
  echo "round $round ratio runner / Python: $ratio"
done
# The machine's noise moves single rounds by more than the distance to 0.10x: the spread.
"$py" -c "import statistics, sys; r = [float(v) for v in sys.argv[1:]]; print(f'ratios over {len(r)} rounds: median {statistics.median(r):.4f}, min {min(r):.4f}, max {max(r):.4f}, above 0.10: {sum(v > 0.10 for v in r)}')" "${ratios[@]}"
