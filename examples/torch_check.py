"""Checks a runner TorchScript export with PyTorch in Python (the full `torch` wheel, 4.7 GB,
too heavy for every CI run; the test suite does the same check through libtorch's loader).
The module takes the run's preprocessed features: this script applies the fitted preprocessing
saved beside it (runner_model_tN.json: missing values filled, shift, scale) to the raw CSV.
`bash examples/bench_torch.sh` runs it.

Usage:
  runner reload-etl v1 --out data.csv
  python examples/torch_check.py mlruns/<exp>/<run>/artifacts/model_tN.pt data.csv quality \
      mlruns/<exp>/<run>/artifacts/predictions_tN.csv
Prints the largest difference between PyTorch's outputs and runner's predictions.
"""
import csv
import json
import re
import sys

import torch


def main(model_pt, data_csv, target, predictions_csv):
    rows = list(csv.DictReader(open(data_csv)))
    saved = json.load(open(re.sub(r"model_(t\d+)\.pt$", r"runner_model_\1.json", model_pt)))
    columns = saved["preprocessor"]["columns"]
    steps = [(name, step["Numeric"]) for name, step in columns]

    def value(r, name, s):
        v = float(r[name]) if r[name] != "" else s["fill"]
        return (v - s["shift"]) / s["scale"]

    x = torch.tensor([[value(r, n, s) for n, s in steps] for r in rows], dtype=torch.float64).float()
    module = torch.jit.load(model_pt)
    out = module(x).detach().numpy()
    preds = list(csv.DictReader(open(predictions_csv)))
    cols = [c for c in preds[0] if c.startswith("proba_")] or ["prediction"]
    diff = max(abs(float(p[c]) - float(out[int(p["row"])][k] if out.ndim == 2 else out[int(p["row"])]))
               for p in preds for k, c in enumerate(cols))
    print(f"max |PyTorch - runner| = {diff:.3g} over {len(preds)} rows")
    return 0 if diff < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
