"""Writes calibration_reference.json: scikit-learn's sigmoid (Platt) and isotonic calibration
of fixed scores, read on a grid, for src/calibrate.rs's tests to match. Run once with
scikit-learn 1.9.1:
    python3 tests/data/calibration_reference.py > tests/data/calibration_reference.json
"""
import json

import numpy as np
from scipy.special import expit
from sklearn.calibration import _sigmoid_calibration
from sklearn.isotonic import IsotonicRegression

rng = np.random.default_rng(11)

# Over-confident scores of a two-class model, with ties (rounded to two decimals).
y = rng.integers(0, 2, 80)
scores = np.round(np.clip(0.5 + (y - 0.5) * rng.uniform(0.0, 0.9, 80) + rng.normal(0, 0.2, 80), 0, 1), 2)
grid = np.linspace(-0.05, 1.05, 23)

a, b = _sigmoid_calibration(scores, y)
iso = IsotonicRegression(out_of_bounds="clip").fit(scores, y)
print(json.dumps({
    "sklearn": "1.9.1",
    "y": y.tolist(),
    "scores": scores.tolist(),
    "grid": grid.tolist(),
    "sigmoid": expit(-(a * grid + b)).tolist(),
    "sigmoid_ab": [a, b],
    "isotonic": iso.predict(grid).tolist(),
}, indent=1))
