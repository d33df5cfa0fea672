"""Optuna's side of examples/bench_search.sh, and the summary of both sides.

usage: bench_search.py optuna DATA.csv FOLDS.csv MODEL SEED TRIALS OUT.json
       bench_search.py summary DIR
The objective is runner's: mean accuracy over the fixed folds of FOLDS.csv (row, fold) on the red
wine grades, for LightGBM (the same library runner links) or scikit-learn's random forest, with
the spaces of examples/bench_search.toml. Optuna 5.0 with TPESampler(seed) and MedianPruner: each
fold's running mean is reported, and a pruned trial stops there.
"""
import json
import statistics
import sys
import time


def objective_factory(model, x, y, folds):
    import numpy as np
    import optuna

    k = max(folds) + 1
    splits = [(np.where(folds != f)[0], np.where(folds == f)[0]) for f in range(k)]

    def fit_predict(params, tr, te):
        if model == "lightgbm":
            import lightgbm as lgb

            clf = lgb.LGBMClassifier(verbose=-1, n_jobs=2, **params)
        else:
            from sklearn.ensemble import RandomForestClassifier

            clf = RandomForestClassifier(n_jobs=2, random_state=0, **params)
        clf.fit(x[tr], y[tr])
        return (clf.predict(x[te]) == y[te]).mean()

    def objective(trial):
        if model == "lightgbm":
            params = {
                "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
                "num_leaves": trial.suggest_int("num_leaves", 4, 128, log=True),
                "min_child_samples": trial.suggest_int("min_data_in_leaf", 5, 100, log=True),
                "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
                "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
                "n_estimators": trial.suggest_int("n_rounds", 50, 400, log=True),
            }
        else:
            features = trial.suggest_categorical("max_features", ["sqrt", "log2", "third", "all"])
            params = {
                "n_estimators": trial.suggest_int("n_trees", 20, 300, log=True),
                "max_depth": trial.suggest_int("max_depth", 2, 24),
                "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 16, log=True),
                "max_features": {"third": 1 / 3, "all": None}.get(features, features),
            }
        scores = []
        for f, (tr, te) in enumerate(splits):
            scores.append(fit_predict(params, tr, te))
            trial.report(sum(scores) / len(scores), f)
            if f + 1 < k and trial.should_prune():
                raise optuna.TrialPruned()
        return sum(scores) / len(scores)

    return objective


def run_optuna(data, folds_csv, model, seed, trials, out):
    import numpy as np
    import optuna
    import pandas as pd

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frame = pd.read_csv(data)
    y = frame.pop("quality").to_numpy()
    x = frame.to_numpy(dtype=float)
    folds = pd.read_csv(folds_csv).sort_values("row")["fold"].to_numpy()
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    started, epoch = time.perf_counter(), time.time()
    study.optimize(objective_factory(model, x, y, folds), n_trials=trials)
    wall = time.perf_counter() - started
    scores = [
        t.value if t.state == optuna.trial.TrialState.COMPLETE else None for t in study.trials
    ]
    times = [t.datetime_complete.timestamp() - epoch for t in study.trials]
    json.dump({"tool": "optuna", "model": model, "seed": seed, "wall_s": wall, "scores": scores,
               "times": times}, open(out, "w"))


def best_so_far(scores):
    best, out = None, []
    for s in scores:
        if s is not None and (best is None or s > best):
            best = s
        out.append(best)
    return out


def svg(curves, path):
    """A small line chart of median best-so-far curves: {label: [values]}."""
    width, height, pad = 640, 360, 50
    values = [v for c in curves.values() for v in c if v is not None]
    lo, hi = min(values), max(values)
    n = max(len(c) for c in curves.values())
    sx = lambda i: pad + (width - 2 * pad) * i / max(n - 1, 1)
    sy = lambda v: height - pad - (height - 2 * pad) * (v - lo) / max(hi - lo, 1e-9)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
             f'<text x="{width / 2}" y="20" text-anchor="middle">Best 5-fold accuracy by trial (median of seeds)</text>',
             f'<text x="{pad}" y="{height - 10}">trial 1</text><text x="{width - pad}" y="{height - 10}" text-anchor="end">trial {n}</text>',
             f'<text x="5" y="{pad}">{hi:.3f}</text><text x="5" y="{height - pad}">{lo:.3f}</text>']
    for j, (label, c) in enumerate(sorted(curves.items())):
        pts = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in enumerate(c) if v is not None)
        parts.append(f'<polyline fill="none" stroke="{colors[j % 4]}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{width - pad - 150}" y="{pad + 18 * j}" fill="{colors[j % 4]}">{label}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


def summary(directory):
    import glob
    import os

    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(directory, "*.json")))]
    curves, lines = {}, []
    for model in sorted({r["model"] for r in runs}):
        for tool in ("runner", "optuna"):
            mine = [r for r in runs if r["model"] == model and r["tool"] == tool]
            if not mine:
                continue
            best = [best_so_far(r["scores"]) for r in mine]
            n = min(len(b) for b in best)
            median = [statistics.median([b[i] for b in best if b[i] is not None] or [0.0]) for i in range(n)]
            curves[f"{tool} {model}"] = median
            walls = [r["wall_s"] for r in mine]
            pruned = statistics.median([sum(s is None for s in r["scores"]) for r in mine])
            at = lambda t: median[min(t, n) - 1]
            lines.append(
                f"{model:9s} {tool:7s} best@10 {at(10):.4f}  best@25 {at(25):.4f}  best@{n} {median[-1]:.4f}  "
                f"wall median {statistics.median(walls):6.1f} s  (seeds {len(mine)}, pruned median {pruned:.0f})"
            )
    for model in sorted({r["model"] for r in runs}):
        ours, theirs = curves.get(f"runner {model}"), curves.get(f"optuna {model}")
        if ours and theirs:
            target = theirs[-1]
            reached = next((i + 1 for i, v in enumerate(ours) if v >= target), None)
            lines.append(f"{model}: runner's median curve reaches Optuna's median best {target:.4f} at trial {reached} of {len(ours)}")
            # Per seed: the seconds runner took to first reach that score (inf: never).
            mine = [r for r in runs if r["model"] == model and r["tool"] == "runner"]
            took = []
            for r in mine:
                best = best_so_far(r["scores"])
                i = next((i for i, v in enumerate(best) if v is not None and v >= target), None)
                took.append(r["times"][i] if i is not None else float("inf"))
            walls = statistics.median([r["wall_s"] for r in runs if r["model"] == model and r["tool"] == "optuna"])
            shown = ", ".join("never" if t == float("inf") else f"{t:.1f} s" for t in took)
            lines.append(f"{model}: runner's time to reach it per seed: {shown} (median {statistics.median(took):.1f} s; Optuna's median wall {walls:.1f} s)")
    svg(curves, os.path.join(directory, "bench_search.svg"))
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1] == "optuna":
        run_optuna(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
    else:
        summary(sys.argv[2])
