#!/usr/bin/env bash
# Benchmark: per-config train time of XGBoost and LightGBM through runner against the same
# training through the Python packages, on this machine, in one run. Both: red wine, stratified
# 5-fold CV plus a refit (6 fits), 200 rounds, depth 6, learning rate 0.1, 2 threads, every
# round scored on train and validation rows. Run: bash examples/bench_gbm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
cargo build --release --locked --features "$RUNNER_FEATURES" --bins 2>/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && "$CARGO_TARGET_DIR/release/runner" sweep "$OLDPWD/configs/wine.toml" --only xgboost --only lightgbm --jobs 1 --json >"$work/r.json" 2>/dev/null)
"$CARGO_TARGET_DIR/release/runner" --tracking-uri "sqlite:///$work/mlflow.db" reload-etl v1 --out "$work/wine.csv" >/dev/null
"$RUNNER_GBM_PYTHON" - "$work/r.json" "$work/wine.csv" <<'PY'
import json, sys, time
import numpy as np, xgboost as xgb, lightgbm as lgb
report = json.load(open(sys.argv[1]))
sys.path.insert(0, "examples")
import bench_wine
X, y, feats, classes = bench_wine.load(sys.argv[2])
splits = bench_wine.splits(y, len(classes))
def run_xgb():
    accs = []
    for tr, te in splits:
        dtr = xgb.DMatrix(X[tr].astype(np.float32), label=y[tr])
        evals = [(dtr, "train")] + ([(xgb.DMatrix(X[te].astype(np.float32), label=y[te]), "valid")] if te is not None else [])
        b = xgb.train({"objective": "multi:softprob", "num_class": len(classes), "eta": 0.1, "max_depth": 6, "nthread": 2, "eval_metric": "mlogloss", "seed": 1, "verbosity": 0}, dtr, 200, evals=evals, verbose_eval=False)
        if te is not None:
            accs.append((b.predict(xgb.DMatrix(X[te].astype(np.float32))).argmax(1) == y[te]).mean())
    return np.mean(accs)
def run_lgb():
    accs = []
    for tr, te in splits:
        dtr = lgb.Dataset(X[tr], label=y[tr])
        valid = [dtr] + ([lgb.Dataset(X[te], label=y[te], reference=dtr)] if te is not None else [])
        b = lgb.train({"objective": "multiclass", "num_class": len(classes), "learning_rate": 0.1, "max_depth": 6, "num_threads": 2, "metric": "multi_logloss", "verbosity": -1, "deterministic": True, "force_col_wise": True}, dtr, 200, valid_sets=valid)
        if te is not None:
            accs.append((b.predict(X[te]).argmax(1) == y[te]).mean())
    return np.mean(accs)
for name, fn in [("xgboost", run_xgb), ("lightgbm", run_lgb)]:
    t = time.perf_counter(); acc = fn(); py = time.perf_counter() - t
    ours = next(r for r in report["runs"] if r["name"] == name)
    print(f"{name:9s} runner {ours['fit_seconds']:.2f} s (accuracy {ours['metrics']['accuracy']['mean']:.4f}) | Python {xgb.__version__ if name == 'xgboost' else lgb.__version__} {py:.2f} s (accuracy {acc:.4f}) for 6 fits x 200 rounds")
PY
