"""Loads runs' MLflow models with the real MLflow client and predicts a CSV with them.

usage: pyfunc_check.py TRACKING_URI INPUT.csv URI...
Each URI is what `mlflow.pyfunc.load_model` takes (`runs:/<id>/model`, `models:/m-<id>`,
`models:/NAME@alias`). The CSV is read with pandas as a user would (its columns as they are,
the target and any extra columns included). Prints JSON: {URI: {column: [values...]}}.
"""
import json
import sys

import mlflow
import pandas as pd

uri, data, models = sys.argv[1], sys.argv[2], sys.argv[3:]
mlflow.set_tracking_uri(uri)
frame = pd.read_csv(data)
out = {}
for m in models:
    model = mlflow.pyfunc.load_model(m)
    predicted = model.predict(frame)
    out[m] = {c: [v.item() if hasattr(v, "item") else v for v in predicted[c]] for c in predicted.columns}
print(json.dumps(out))
