"""Predicts raw columns with runner's native XGBoost / LightGBM files, as a Python user would.

usage: native_check.py xgboost|lightgbm MODEL_FILE INPUT.csv
Reads INPUT.csv with pandas, takes the booster's own feature names as the columns (so a model
without names, or with names the file lacks, fails), predicts, and prints JSON:
{"feature_names": [...], "proba": [[...], ...]} (one row per input row, one column per class).
"""
import json
import sys

import numpy as np
import pandas as pd

kind, model_file, data = sys.argv[1:4]
frame = pd.read_csv(data)
if kind == "xgboost":
    import xgboost as xgb

    booster = xgb.Booster(model_file=model_file)
    names = booster.feature_names
    proba = booster.predict(xgb.DMatrix(frame[names]))
else:
    import lightgbm as lgb

    booster = lgb.Booster(model_file=model_file)
    names = booster.feature_name()
    # LightGBM keeps names with spaces as underscores.
    columns = {c.replace(" ", "_"): c for c in frame.columns}
    proba = booster.predict(frame[[columns[n] for n in names]].to_numpy(dtype=np.float64))
proba = np.asarray(proba, dtype=np.float64)
if proba.ndim == 1:
    proba = np.stack([1 - proba, proba], axis=1)
print(json.dumps({"feature_names": list(names), "proba": proba.tolist()}))
