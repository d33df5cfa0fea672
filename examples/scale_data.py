"""A seeded synthetic table for examples/bench_scale.sh: numeric and categorical columns, some
missing values, a binary class or a numeric target, and fixed 5-fold assignments.

usage: scale_data.py ROWS classification|regression SEED OUT.csv FOLDS.csv

Columns: x0..x7 (normal, x1 correlated with x0, x7 log-normal; 3% of x2 and x5 missing), c1 (5
levels), c2 (12 levels, 2% missing), c3 (3 unequal levels), and `y`. The target depends on
interactions, a sine, a square, the categories and the log of x7, plus noise, so that trees,
boosters, kernels and neighbours all have something to find. The same (ROWS, task, SEED) always
writes the same bytes (numpy's PCG64 stream). The folds are stratified by class, or plain
k-fold for regression (scikit-learn, random_state 0), in the `row,fold` form runner's
`cv.assignments` reads.
"""
import sys

import numpy as np


def make(rows, task, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    x[:, 1] = 0.6 * x[:, 0] + 0.8 * x[:, 1]
    x[:, 7] = np.exp(0.7 * x[:, 7])
    c1 = rng.integers(0, 5, rows)
    c2 = rng.integers(0, 12, rows)
    c3 = rng.choice(3, rows, p=[0.6, 0.3, 0.1])
    effect1 = np.array([0.0, 0.5, -0.5, 1.0, -1.0])
    effect2 = rng.normal(scale=0.6, size=12)
    effect3 = np.array([0.0, 0.8, -1.2])
    signal = (
        1.2 * x[:, 0]
        - 0.8 * x[:, 2] * x[:, 3]
        + np.sin(2.0 * x[:, 4])
        + 0.5 * x[:, 5] ** 2
        + 0.4 * np.log(x[:, 7])
        + effect1[c1]
        + effect2[c2]
        + effect3[c3]
    )
    noise = rng.normal(scale=0.7, size=rows)
    if task == "classification":
        z = signal + noise
        y = (z > np.median(z)).astype(int)
    else:
        y = np.round(1000.0 + 250.0 * (signal + noise), 2)
    cols = {f"x{j}": x[:, j].round(6).astype(object) for j in range(8)}
    for j, share in [(2, 0.03), (5, 0.03)]:
        cols[f"x{j}"][rng.random(rows) < share] = ""
    cols["c1"] = np.array(list("abcde"), dtype=object)[c1]
    cols["c2"] = np.array([f"g{k:02d}" for k in range(12)], dtype=object)[c2]
    cols["c2"][rng.random(rows) < 0.02] = ""
    cols["c3"] = np.array(["low", "mid", "high"], dtype=object)[c3]
    cols["y"] = y
    return cols, y


def folds(y, task):
    from sklearn.model_selection import KFold, StratifiedKFold

    split = StratifiedKFold(5, shuffle=True, random_state=0) if task == "classification" else KFold(5, shuffle=True, random_state=0)
    fold = np.zeros(len(y), dtype=int)
    for k, (_, test) in enumerate(split.split(np.zeros(len(y)), y)):
        fold[test] = k
    return fold


def main():
    rows, task, seed, out, folds_out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    cols, y = make(rows, task, seed)
    names = list(cols)
    with open(out, "w") as f:
        f.write(",".join(names) + "\n")
        for i in range(rows):
            f.write(",".join(str(cols[n][i]) for n in names) + "\n")
    with open(folds_out, "w") as f:
        f.write("row,fold\n")
        f.writelines(f"{i},{k}\n" for i, k in enumerate(folds(y, task)))


if __name__ == "__main__":
    main()
