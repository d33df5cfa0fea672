"""Runs an ONNX model exported by `runner export --format onnx` with onnxruntime from PyPI.

usage: onnx_check.py MODEL.onnx INPUT.csv
Reads the model's input columns (metadata `feature_names`) from the CSV, runs the model, and
prints JSON: {"label": [...], "probabilities": [[...]]} or {"value": [...]}.
"""
import csv
import json
import sys

import numpy as np
import onnxruntime as ort

model, data = sys.argv[1], sys.argv[2]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
names = json.loads(meta["feature_names"])
with open(data, newline="") as f:
    rows = list(csv.DictReader(f))
x = np.array(
    [[float(r[n]) if r[n] != "" else np.nan for n in names] for r in rows], dtype=np.float64
)
outputs = [o.name for o in session.get_outputs()]
result = session.run(outputs, {"input": x})
doc = {}
for name, value in zip(outputs, result):
    doc[name] = value.tolist()
print(json.dumps(doc))
