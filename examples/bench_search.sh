#!/usr/bin/env bash
# runner's TPE against Optuna 5.0 (TPESampler + MedianPruner) on the same objective: mean
# accuracy over the same five fixed folds of the red wine grades (cv.assignments), for LightGBM
# and a random forest, 50 trials, seeds 1-3 (override: SEEDS="1 2" TRIALS=20). Both sides run one
# trial at a time (MODELS="lightgbm" runs one model). Prints the median best-so-far at trials 10, 25 and 50, the wall time, the
# trial at which runner reaches Optuna's median best, and writes bench_search.svg.
# Takes up to 40 minutes on 2 cores; run by hand, not in CI.
set -euo pipefail
source "$(dirname "$0")/bench_setup.sh"
bench_setup bench-venv 'import optuna, lightgbm, sklearn, pandas, sys; sys.exit(optuna.__version__ != "5.0.0")' \
  optuna==5.0.0 lightgbm==4.7.0 scikit-learn==1.9.1 pandas==3.1.1
out="${BENCH_DIR:-$CARGO_TARGET_DIR/bench-search}"
rm -rf "$out" && mkdir -p "$out/results"
cd "$out"
# The red wines as CSV (the builtin table through an ETL that keeps everything), and the folds.
printf 'experiment = "data"\nsweeps = ["one.toml"]\n[data]\nsource = "builtin:winequality-red"\ntarget = "quality"\n' > data.toml
printf '[[models]]\nkind = "naive_bayes"\n' > one.toml
"$runner" sweep data.toml --tracking-uri sqlite:///data.db >/dev/null
"$runner" reload-etl v1 --tracking-uri sqlite:///data.db --out red.csv >/dev/null
"$py" - <<'PY'
import pandas as pd
from sklearn.model_selection import StratifiedKFold
y = pd.read_csv("red.csv")["quality"]
folds = [0] * len(y)
for f, (_, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)):
    for r in test:
        folds[r] = f
pd.DataFrame({"row": range(len(y)), "fold": folds}).to_csv("folds.csv", index=False)
PY
cp "$repo/examples/bench_search.toml" sweep.toml
trials="${TRIALS:-50}"
for seed in ${SEEDS:-1 2 3}; do
  for model in ${MODELS:-lightgbm forest}; do
    printf 'experiment = "bench-%s"\nseed = %s\nsweeps = ["sweep.toml"]\n[data]\nsource = "red.csv"\ntarget = "quality"\n[cv]\nfolds = 5\nassignments = "folds.csv"\n' "$model" "$seed" > "runner-$seed.toml"
    start=$(date +%s.%N)
    "$runner" sweep "runner-$seed.toml" --only "$model" --jobs 1 --trials "$trials" --json \
      --tracking-uri "sqlite:///runner-$model-$seed.db" > "runner-$model-$seed.report" 2>/dev/null || true
    end=$(date +%s.%N)
    "$py" - "$model" "$seed" "$start" "$end" <<'PY'
import json, sys
model, seed, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
report = json.load(open(f"runner-{model}-{seed}.report"))
# The trials in order; the search's last run, `lightgbm#best[..]`, retrains the best one in full.
runs = [r for r in report["runs"] if "#best[" not in r["name"]]
runs = sorted(runs, key=lambda r: int(r["name"].split("#")[1].split("[")[0]))
scores = [r["metrics"]["accuracy"]["mean"] if r["status"] == "FINISHED" else None for r in runs]
# Seconds from the start of the command to the end of each trial, as the store recorded it.
import sqlite3
db = sqlite3.connect(f"runner-{model}-{seed}.db")
ended = dict(db.execute("SELECT run_uuid, end_time FROM runs"))
times = [ended[r["run_uuid"]] / 1000 - start for r in runs]
json.dump({"tool": "runner", "model": model, "seed": seed, "wall_s": end - start, "scores": scores,
           "times": times}, open(f"results/runner-{model}-{seed}.json", "w"))
PY
    "$py" "$repo/examples/bench_search.py" optuna red.csv folds.csv "$model" "$seed" "$trials" "results/optuna-$model-$seed.json"
    echo "seed $seed $model done" >&2
  done
done
"$py" "$repo/examples/bench_search.py" summary results
echo "chart: $out/results/bench_search.svg"
