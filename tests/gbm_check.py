"""Loads runner's native XGBoost / LightGBM model files with the PyPI packages and compares their
predictions on the ETL output with the ones runner wrote (predictions_tN.csv).

Usage: python gbm_check.py xgboost|lightgbm MODEL_FILE DATA_CSV TARGET PREDICTIONS_CSV
Prints JSON: {"rows": n, "max_abs_diff": d, "labels_equal": bool}
"""
import csv
import json
import sys

import numpy as np


def main(kind, model_file, data_csv, target, predictions_csv):
    with open(data_csv) as f:
        rows = list(csv.DictReader(f))
    features = [c for c in rows[0].keys() if c != target]
    x = np.array([[float(r[c]) for c in features] for r in rows], dtype=np.float64)
    with open(predictions_csv) as f:
        preds = list(csv.DictReader(f))
    proba_cols = [c for c in preds[0].keys() if c.startswith("proba_")]
    idx = [int(p["row"]) for p in preds]
    theirs = np.array([[float(p[c]) for c in proba_cols] for p in preds])
    if kind == "xgboost":
        import xgboost as xgb
        booster = xgb.Booster(model_file=model_file)
        # The booster carries its columns' names; XGBoost checks them against the matrix's.
        ours = booster.predict(xgb.DMatrix(x[idx].astype(np.float32), feature_names=features))
    else:
        import lightgbm as lgb
        booster = lgb.Booster(model_file=model_file)
        ours = booster.predict(x[idx])
    ours = np.asarray(ours, dtype=np.float64).reshape(theirs.shape[0], -1)
    if ours.shape[1] == 1 and theirs.shape[1] == 2:
        ours = np.hstack([1 - ours, ours])
    labels = [c[len("proba_"):] for c in proba_cols]
    predicted = [labels[i] for i in ours.argmax(axis=1)]
    print(json.dumps({
        "rows": len(idx),
        "max_abs_diff": float(np.abs(ours - theirs).max()),
        "labels_equal": predicted == [p["prediction"] for p in preds],
        "versions": {"xgboost": __import__("xgboost").__version__, "lightgbm": __import__("lightgbm").__version__},
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
