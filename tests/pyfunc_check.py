"""Loads runs' MLflow models with the real MLflow client and predicts a CSV with them.

usage: pyfunc_check.py TRACKING_URI INPUT.csv URI...
Each URI is what `mlflow.pyfunc.load_model` takes (`runs:/<id>/model`, `models:/m-<id>`,
`models:/NAME@alias`). The CSV is read with pandas as a user would (the target and any extra
columns included), whole-number columns cast to float where the signature says double. Prints JSON:
{"predictions": {URI: {column: [values...]}}, "logged_models": [...], "run_outputs": {...},
 "registered": {NAME: {"aliases": {...}, "versions": [...]}}}.
"""
import json
import sys

import mlflow
import pandas as pd

uri, data, models = sys.argv[1], sys.argv[2], sys.argv[3:]
mlflow.set_tracking_uri(uri)
client = mlflow.MlflowClient()
frame = pd.read_csv(data)
out = {"predictions": {}, "logged_models": [], "run_outputs": {}, "registered": {}}

def as_signed(model, frame):
    """The frame with the types the model's signature declares, as the README tells users:
    MLflow refuses an int64 column (pandas' type for a column of whole numbers) where the
    signature says double."""
    types = {c.name: getattr(c.type, "name", str(c.type)) for c in model.metadata.get_input_schema().inputs}
    doubles = {c: "float64" for c, t in types.items() if t == "double" and c in frame}
    return frame.astype(doubles)


for m in models:
    model = mlflow.pyfunc.load_model(m)
    predicted = model.predict(as_signed(model, frame))
    out["predictions"][m] = {
        c: [v.item() if hasattr(v, "item") else v for v in predicted[c]] for c in predicted.columns
    }
experiments = [e.experiment_id for e in client.search_experiments()]
for lm in mlflow.search_logged_models(experiment_ids=experiments, output_format="list"):
    out["logged_models"].append(
        {"model_id": lm.model_id, "name": lm.name, "run_id": lm.source_run_id, "status": str(lm.status)}
    )
    run = client.get_run(lm.source_run_id)
    out["run_outputs"][lm.source_run_id] = [o.model_id for o in run.outputs.model_outputs]
for rm in client.search_registered_models():
    versions = client.search_model_versions(f"name='{rm.name}'")
    out["registered"][rm.name] = {
        "aliases": rm.aliases,
        "versions": [{"version": int(v.version), "run_id": v.run_id, "source": v.source} for v in versions],
    }
print(json.dumps(out))
