"""Mistakes a notebook user makes, and the exceptions they get. One JSON document out."""
import json
import os
import sys

import pandas as pd

import runner_ml as runner

work, csv = sys.argv[1], sys.argv[2]
os.chdir(work)
wine = pd.read_csv(csv).head(300)
base = {"experiment": "errs", "data": {"target": "quality"}, "cv": {"folds": 3},
        "models": [{"kind": "decision_tree"}]}
out = {}


def caught(name, call):
    try:
        call()
        out[name] = None
    except runner.ConfigError as e:
        out[name] = {"type": "ConfigError", "text": str(e), "key": e.key, "line": e.line,
                     "file": e.file, "is_value_error": isinstance(e, ValueError)}
    except runner.RunnerError as e:
        out[name] = {"type": "RunnerError", "text": str(e)}


caught("bad_key", lambda: runner.sweep(dict(base, cv={"folds": 3, "foldz": 2}), data=wine))
caught("bad_value", lambda: runner.sweep(dict(base, cv={"folds": 1}), data=wine))
caught("no_target", lambda: runner.sweep(base, data=wine.drop(columns=["quality"])))
caught("toml_text", lambda: runner.sweep(
    'experiment = "errs"\nsweeps = []\n[data]\ntarget = "quality"\n[cv]\nfolds = "three"\n',
    data=wine))
caught("missing_store", lambda: runner.replay("t3"))
out["dirty_store"] = os.path.exists("mlflow.db")
print(json.dumps(out))
