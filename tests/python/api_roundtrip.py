"""A sweep from a dict config on a pandas DataFrame, then every other call of the package on
its runs. Prints one JSON document of what a user would see, for tests/python_api.rs."""
import json
import os
import sys

import subprocess

import pandas as pd
import polars as pl

import runner_ml as runner

work, csv = sys.argv[1], sys.argv[2]
os.chdir(work)
wine = pd.read_csv(csv).head(900)
config = {
    "experiment": "py-api",
    "seed": 7,
    "data": {"target": "quality"},
    "cv": {"folds": 3},
    "tracking": {"uri": "sqlite:///py.db"},
}
models = [{"kind": "logistic_regression"}, {"kind": "decision_tree", "max_depth": [3, 5]}]
result = runner.sweep(config, data=wine, sweeps=models)
best = result.best
board = result.leaderboard
again = runner.sweep(config, data=wine, sweeps=models, restart=True, verbose=False)
listed = runner.runs()
replayed = runner.replay(best.version, check=True)
new_rows = wine.drop(columns=["quality"]).tail(25)
predicted = runner.predict(best.version, new_rows, proba=True)
rebuilt = runner.reload_etl(result.etl_version)
report = runner.eda(config, data=wine)

# Another frame is not the data of v1; another process needs the frame passed again.
try:
    runner.reload_etl("v1", data=wine.head(800))
    wrong = None
except runner.RunnerError as e:
    wrong = str(e)
elsewhere = subprocess.run(
    [sys.executable, "-c", "import runner_ml as r; r.reload_etl('v1', tracking_uri='sqlite:///py.db')"],
    capture_output=True, text=True)
gone = elsewhere.stderr.strip().splitlines()[-1]
restored = runner.reload_etl("v1", data=wine)

# A polars frame, and predictions on one.
pwine = pl.from_pandas(wine)
from_polars = runner.sweep(dict(config, experiment="py-polars"), data=pwine, sweeps=models[:1],
                           verbose=False)
polars_predicted = runner.predict(from_polars.best.version, pwine.drop("quality").head(5))
try:
    runner.replay("t999")
    missing = None
except runner.RunnerError as e:
    missing = str(e)
print(json.dumps({
    "versions": [r.version for r in result.runs],
    "statuses": [r.status for r in result.runs],
    "names": [r.name for r in result.runs],
    "board_runs": list(board["run"]),
    "board_primary": list(board[result.primary_metric]),
    "higher_is_better": result.higher_is_better,
    "best": best.version,
    "best_folds": len(best.fold_table()),
    "per_class_rows": len(best.per_class()),
    "artifacts": [os.path.basename(p) for p in best.artifacts],
    "etl": result.etl_version,
    "etl_again": again.etl_version,
    "again_versions": [r.version for r in again.runs],
    "listed": list(listed["run"]),
    "replay": {"original": replayed.original, "replay": replayed.replay,
               "identical": replayed.identical, "status": replayed.status},
    "predicted_rows": len(predicted),
    "predicted_columns": list(predicted.columns),
    "predicted_labels": sorted(set(int(v) for v in predicted["prediction"])),
    "known_labels": sorted(set(int(v) for v in wine["quality"])),
    "rebuilt_shape": list(rebuilt.shape),
    "frame_shape": list(wine.shape),
    "html_has_table": "<table" in result._repr_html_(),
    "models": list(runner.models()["kind"]),
    "missing_run": missing,
    "wrong_frame": wrong,
    "frame_file_gone": gone,
    "restored_shape": list(restored.shape),
    "polars": {"etl": from_polars.etl_version, "status": from_polars.runs[0].status,
               "predicted_rows": len(polars_predicted)},
    "eda": {"etl": report.etl_version, "plots": len(report.plots),
            "inline": "data:image/svg+xml;base64," in report._repr_markdown_(),
            "target_in_report": "quality" in json.dumps(report.report)},
}))
