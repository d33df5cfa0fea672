"""The Python side of examples/bench_scale.sh, and its table.

usage: bench_scale.py fit DATA.csv FOLDS.csv TASK THREADS OUT.json KIND...
       bench_scale.py table RESULTS_DIR

`fit` runs the same 5 folds (FOLDS.csv) as runner, with the anchors runner's kinds are measured
against: scikit-learn 1.9.1, xgboost and lightgbm, with runner's settings (sweep-*.toml in
bench_scale.sh): missing numbers filled with the fold's median, categories with the most frequent
one, one-hot columns, standard scaling of the numbers for the kinds runner scales. It writes seconds per fit
(the mean over folds of fit plus prediction, probabilities for classes) and the mean score
(accuracy or MAE).
"""
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np

# scikit-learn 1.9 deprecates SVC(probability=True) but still honours it.
warnings.filterwarnings("ignore", category=FutureWarning)


def preprocess(frame, scaled):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in frame.columns if c.startswith("x")]
    text = [c for c in frame.columns if c.startswith("c")]
    num = [SimpleImputer(strategy="median")] + ([StandardScaler()] if scaled else [])
    # runner scales numbers only: one-hot columns stay 0/1.
    cat = [SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore", sparse_output=False)]
    return ColumnTransformer([("num", make_pipeline(*num), numeric), ("cat", make_pipeline(*cat), text)])


def estimator(kind, task, threads):
    """runner's config of `kind` in bench_scale.sh, as the anchor spells it; whether it scales."""
    from sklearn import ensemble, linear_model, naive_bayes, neighbors, svm, tree

    cls = task == "classification"
    if kind == "decision_tree":
        return (tree.DecisionTreeClassifier if cls else tree.DecisionTreeRegressor)(max_depth=12, random_state=0), False
    if kind == "random_forest":
        forest = ensemble.RandomForestClassifier if cls else ensemble.RandomForestRegressor
        return forest(n_estimators=50, n_jobs=threads, random_state=0), False
    if kind == "logistic_regression":
        return linear_model.LogisticRegression(max_iter=200), True
    if kind == "linear":
        return linear_model.LinearRegression(), True
    if kind == "naive_bayes":
        return naive_bayes.GaussianNB(), True
    if kind == "svm":
        return (svm.SVC(C=1.0, gamma=0.1, probability=True, random_state=0) if cls else svm.SVR(C=1.0, gamma=0.1, epsilon=0.1)), True
    if kind == "knn":
        knn = neighbors.KNeighborsClassifier if cls else neighbors.KNeighborsRegressor
        return knn(n_neighbors=15, weights="distance", n_jobs=threads), True
    if kind == "xgboost":
        import xgboost as xgb

        booster = xgb.XGBClassifier if cls else xgb.XGBRegressor
        return booster(n_estimators=300, learning_rate=0.3, max_depth=6, tree_method="hist", n_jobs=threads), False
    if kind == "lightgbm":
        import lightgbm as lgb

        booster = lgb.LGBMClassifier if cls else lgb.LGBMRegressor
        return booster(n_estimators=300, verbose=-1, n_jobs=threads), False
    raise SystemExit(f"unknown kind {kind}")


def fit(data, folds_csv, task, threads, out, kinds):
    import pandas as pd
    from sklearn.pipeline import make_pipeline

    frame = pd.read_csv(data, keep_default_na=True)
    y = frame.pop("y").to_numpy()
    fold = pd.read_csv(folds_csv).sort_values("row")["fold"].to_numpy()
    results = {}
    for kind in kinds:
        model, scaled = estimator(kind, task, threads)
        seconds, scores = [], []
        for k in range(5):
            train, test = fold != k, fold == k
            pipe = make_pipeline(preprocess(frame, scaled), model)
            start = time.perf_counter()
            pipe.fit(frame[train], y[train])
            if task == "classification":
                proba = pipe.predict_proba(frame[test])
                pred = pipe.classes_[proba.argmax(axis=1)]
                scores.append(float((pred == y[test]).mean()))
            else:
                pred = pipe.predict(frame[test])
                scores.append(float(np.abs(pred - y[test]).mean()))
            seconds.append(time.perf_counter() - start)
        results[kind] = {"seconds_per_fit": statistics.mean(seconds), "score": statistics.mean(scores)}
        print(f"python {task} {len(y)} {kind}: {results[kind]}", file=sys.stderr)
    json.dump(results, open(out, "w"))


def table(directory):
    lines = [
        "| task | rows | kind | runner s/fit | anchor s/fit | ratio | runner score | anchor score | difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(os.listdir(directory), key=lambda n: (n.split("-")[1], int(n.split("-")[2].split(".")[0]) if n.count("-") > 1 else 0)):
        if not name.startswith("runner-"):
            continue
        _, task, rows = name[:-5].split("-")
        ours = json.load(open(os.path.join(directory, name)))
        anchor_path = os.path.join(directory, f"python-{task}-{rows}.json")
        theirs = json.load(open(anchor_path)) if os.path.exists(anchor_path) else {}
        for kind, r in ours.items():
            a = theirs.get(kind)
            if a is None:
                continue
            ratio = r["seconds_per_fit"] / max(a["seconds_per_fit"], 1e-9)
            diff = r["score"] - a["score"]
            rel = f"{diff:+.4f}" if task == "classification" else f"{diff:+.1f} ({100 * diff / a['score']:+.1f}%)"
            lines.append(
                f"| {task} | {int(rows):,} | {kind} | {r['seconds_per_fit']:.3f} | {a['seconds_per_fit']:.3f} | "
                f"{ratio:.2f}x | {r['score']:.4f} | {a['score']:.4f} | {rel} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1] == "fit":
        fit(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7:])
    else:
        table(sys.argv[2])
