#!/usr/bin/env bash
# runner against scikit-learn 1.9.1, xgboost and lightgbm (PyPI) at real table sizes, in one run.
# For 5k, 50k and 500k rows (override: SIZES="5000 50000"; TASKS="classification"; KINDS="knn svm"), a seeded
# synthetic table (examples/scale_data.py: numeric and categorical columns, missing values) and
# its fixed 5 folds; every kind runs the same folds on both sides with THREADS threads (default:
# the cores): runner with `--jobs 1`, the anchors with n_jobs where they have it. The kernel SVM
# and KNN stop at 50k rows. Ratios are per fit: runner's time is its run's training time (5
# folds and the refit, with `cv.importance = "none"`: the anchors measure no permutation
# importance) over 6 fits; the anchors' is fit plus prediction per fold. Prints a markdown table (results in $BENCH_DIR/results).
# By hand, not in CI: 5k and 50k take about half an hour on 2 cores, 500k much longer.
set -euo pipefail
source "$(dirname "$0")/bench_setup.sh"
bench_setup scale-venv 'import sklearn, xgboost, lightgbm, pandas, sys; sys.exit(sklearn.__version__ != "1.9.1")' \
  scikit-learn==1.9.1 pandas==3.1.1 lightgbm==4.7.0 xgboost-cpu==3.2.0
threads="${THREADS:-$(nproc)}"
out="${BENCH_DIR:-$CARGO_TARGET_DIR/bench-scale}"
mkdir -p "$out/results" "$out/data"
cd "$out"
for task in ${TASKS:-classification regression}; do
  if [ "$task" = classification ]; then
    kinds="decision_tree random_forest logistic_regression naive_bayes xgboost lightgbm svm knn"
  else
    kinds="decision_tree random_forest linear xgboost lightgbm svm knn"
  fi
  if [ -n "${KINDS:-}" ]; then
    kinds=$(for k in $kinds; do case " $KINDS " in *" $k "*) echo "$k" ;; esac; done)
  fi
  # runner's side of the anchors' settings in bench_scale.py, for the kinds of the task.
  : > "sweep-$task.toml"
  for k in $kinds; do
    printf '[[models]]\nkind = "%s"\n' "$k" >> "sweep-$task.toml"
    case $k in
      decision_tree) echo 'max_depth = 12' ;;
      random_forest) echo 'n_trees = 50' ;;
      svm) printf 'c = 1.0\ngamma = 0.1\n' ;;
      knn) printf 'k = 15\nweights = "distance"\n' ;;
      xgboost | lightgbm) echo 'n_rounds = 300' ;;
    esac >> "sweep-$task.toml"
  done
  for rows in ${SIZES:-5000 50000 500000}; do
    data="data/$task-$rows.csv" folds="data/$task-$rows-folds.csv"
    [ -f "$folds" ] || "$py" "$repo/examples/scale_data.py" "$rows" "$task" 7 "$data" "$folds"
    mine=""
    for k in $kinds; do
      if [ "$rows" -gt 50000 ] && { [ "$k" = svm ] || [ "$k" = knn ]; }; then continue; fi
      mine="$mine --only $k"
    done
    printf 'experiment = "scale-%s-%s"\nseed = 1\ntask = "%s"\nsweeps = ["sweep-%s.toml"]\n[data]\nsource = "%s"\ntarget = "y"\n[etl]\nimpute = "median"\nscale = "standard"\n[cv]\nfolds = 5\nassignments = "%s"\nimportance = "none"\n' \
      "$task" "$rows" "$task" "$task" "$data" "$folds" > "runner-$task-$rows.toml"
    rm -rf mlruns "runner-$task-$rows.db"
    "$runner" sweep "runner-$task-$rows.toml" --jobs 1 $mine --json --tracking-uri "sqlite:///runner-$task-$rows.db" \
      > "runner-$task-$rows.report" 2>"runner-$task-$rows.log" || true
    "$py" - "$task" "$rows" <<'PY'
import json, sys
task, rows = sys.argv[1], sys.argv[2]
report = json.load(open(f"runner-{task}-{rows}.report"))
metric = "accuracy" if task == "classification" else "mae"
out = {}
for r in report["runs"]:
    if r["status"] == "FINISHED":
        out[r["kind"]] = {"seconds_per_fit": r["fit_seconds"] / 6, "score": r["metrics"][metric]["mean"]}
json.dump(out, open(f"results/runner-{task}-{rows}.json", "w"))
PY
    # The anchors: the kinds runner ran.
    ran=$("$py" -c "import json; print(' '.join(json.load(open('results/runner-$task-$rows.json'))))")
    "$py" "$repo/examples/bench_scale.py" fit "$data" "$folds" "$task" "$threads" "results/python-$task-$rows.json" $ran
    echo "$task $rows done" >&2
  done
done
"$py" "$repo/examples/bench_scale.py" table results
