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
                hist[key] = [[m.step, m.value, m.timestamp] for m in client.get_metric_history(r.info.run_id, key)]
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


def runner_wrote(path):
    """Whether runner has created its store at `path` (read-only look, so MLflow never
    creates a store of its own there first)."""
    import os
    import sqlite3
    if not os.path.exists(path):
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        n = con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runner_training_runs'").fetchone()[0]
        con.close()
        return n > 0
    except sqlite3.Error:
        return False


def watch(uri, name, key, seconds):
    """Prints, every half second while the run named *name* trains, how many points of `key`
    the MLflow client reads: one JSON line per look, until the run ends or time is up."""
    import time
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.time() + float(seconds)
    while not runner_wrote(uri[len("sqlite:///"):]) and time.time() < deadline:
        time.sleep(0.1)
    client = MlflowClient(tracking_uri=uri)
    while time.time() < deadline:
        runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                if name in (r.info.run_name or "")]
        if runs:
            r = runs[0]
            n = len(client.get_metric_history(r.info.run_id, key))
            print(json.dumps({"status": r.info.status, "points": n}), flush=True)
            if r.info.status in ("FINISHED", "FAILED", "KILLED"):
                return
        time.sleep(0.5)


if __name__ == "__main__":
    if sys.argv[1] == "create":
        create(sys.argv[2])
    elif sys.argv[1] == "watch":
        watch(*sys.argv[2:6])
    else:
        main(sys.argv[1])
