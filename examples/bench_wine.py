"""What the Python side of the benchmarks shares: the red wine as runner's `reload-etl` wrote
it, and stratified 5-fold splits plus a refit on every row (same sizes as runner's folds, not
the same rows)."""
import csv

import numpy as np


def load(path, dtype=np.float64):
    rows = list(csv.DictReader(open(path)))
    feats = [c for c in rows[0] if c != "quality"]
    X = np.array([[float(r[c]) for c in feats] for r in rows], dtype=dtype)
    classes = sorted({int(r["quality"]) for r in rows})
    y = np.array([classes.index(int(r["quality"])) for r in rows])
    return X, y, feats, classes


def splits(y, n_classes, seed=42):
    """[(train rows, test rows)] * 5 + [(all rows, None)] for the refit."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), int)
    nxt = 0
    for c in range(n_classes):
        for i in rng.permutation(np.where(y == c)[0]):
            fold[i] = nxt
            nxt = (nxt + 1) % 5
    return [(np.where(fold != k)[0], np.where(fold == k)[0]) for k in range(5)] + [(np.arange(len(y)), None)]
