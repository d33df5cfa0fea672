"""Reads a tracking store with the real MLflow client and prints what it sees as JSON.

Usage: python mlflow_read.py sqlite:////abs/path/mlflow.db
Used by the integration tests: whatever MLflow cannot read, or reads with a warning, fails them.
"""
import json
import sys
import warnings

import mlflow
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (its import-time deprecation notices are MLflow's own)
from mlflow.tracking import MlflowClient

# From here on, any warning while opening or reading the store is a failure.
warnings.simplefilter("error")


def main(uri):
    client = MlflowClient(tracking_uri=uri)
    out = {"mlflow_version": mlflow.__version__, "experiments": []}
    for exp in client.search_experiments():
        runs = client.search_runs([exp.experiment_id], max_results=10000, order_by=["attributes.start_time ASC"])
        e = {"name": exp.name, "id": exp.experiment_id, "tags": dict(exp.tags), "runs": []}
        for r in runs:
            hist = {}
            for key in r.data.metrics:
                hist[key] = [[m.step, m.value] for m in client.get_metric_history(r.info.run_id, key)]
            inputs = []
            if r.inputs is not None:
                for di in r.inputs.dataset_inputs:
                    d = di.dataset
                    inputs.append({
                        "name": d.name, "digest": d.digest, "source_type": d.source_type,
                        "source": json.loads(d.source), "schema": json.loads(d.schema) if d.schema else None,
                        "profile": json.loads(d.profile) if d.profile else None,
                        "tags": {t.key: t.value for t in di.tags},
                    })
            e["runs"].append({
                "run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
                "start_time": r.info.start_time, "end_time": r.info.end_time,
                "artifact_uri": r.info.artifact_uri, "user_id": r.info.user_id,
                "params": r.data.params, "tags": r.data.tags, "metrics": r.data.metrics, "history": hist,
                "artifacts": sorted(a.path for a in client.list_artifacts(r.info.run_id)),
                "inputs": inputs,
            })
        out["experiments"].append(e)
    print(json.dumps(out))


def create(uri):
    """Creates a store the way a user of MLflow would, with one run of its own."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("made-by-mlflow")
    with mlflow.start_run(run_name="python-run"):
        mlflow.log_param("alpha", 0.5)
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)


if __name__ == "__main__":
    if sys.argv[1] == "create":
        create(sys.argv[2])
    else:
        main(sys.argv[1])
