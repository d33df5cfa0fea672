"""A notebook whose environment points at a team's MLflow server (MLFLOW_TRACKING_URI, as most
MLflow users' shells do): a sweep from a dict on a DataFrame, then the runs, a replay check and
predictions, all against the server as the store. Prints one JSON document for
tests/python_api.rs."""
import json
import os
import sys

import pandas as pd

import runner_ml as runner

work, csv = sys.argv[1], sys.argv[2]
os.chdir(work)
wine = pd.read_csv(csv).head(600)
config = {"experiment": "py-server", "seed": 5, "data": {"target": "quality"}, "cv": {"folds": 3}}
models = [{"kind": "decision_tree", "max_depth": [3, 5]}]
result = runner.sweep(config, data=wine, sweeps=models, verbose=False)
replayed = runner.replay(result.best.version, check=True)
listed = runner.runs()
predicted = runner.predict(result.best.version, wine.drop(columns=["quality"]).head(10))
print(json.dumps({
    "store": result.store,
    "versions": [r.version for r in result.runs],
    "statuses": [r.status for r in result.runs],
    "listed": list(listed["run"]),
    "identical": replayed.identical,
    "replay": replayed.replay,
    "predicted_rows": len(predicted),
    "files_here": sorted(os.listdir(work)),
}))
