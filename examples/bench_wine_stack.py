"""The wine sweep in the Python stack, the anchor of issue 19's wall-time ratio.

usage: bench_wine_stack.py WINE.csv STORE_DIR

The 14 configs of configs/wine.toml (sweeps/wine-classifiers.toml) with scikit-learn, xgboost,
lightgbm and PyTorch, as a notebook would glue them to MLflow: one parent run, and per config a
nested run with its parameters, each fold's metrics and their means, the boosters' per-round
and the networks' per-epoch validation loss as metric histories, a confusion-matrix plot and a
learning-curve plot, the refit model's predictions as a CSV, and the refit model logged with its
MLflow flavour. Stratified 5-fold CV plus a refit on every row (bench_wine.splits: the same fold
sizes as runner's, not the same rows), inputs standardised on each training fold. The libraries
use both cores where they can (n_jobs=2, nthread=2, torch.set_num_threads(2)); the configs run
one after another. Prints one JSON line: wall seconds, seconds training and logging, accuracies.
"""
import json
import os
import sys
import time

START = time.perf_counter()

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import bench_wine  # noqa: E402

SEED = 42
THREADS = 2


def sklearn_configs():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    yield "tree", {"max_depth": 10}, lambda: DecisionTreeClassifier(max_depth=10, random_state=SEED)
    yield "forest", {"n_trees": 100}, lambda: RandomForestClassifier(100, n_jobs=THREADS, random_state=SEED)
    for alpha in (0.1, 1.0):
        yield "logistic", {"alpha": alpha}, lambda a=alpha: LogisticRegression(C=1.0 / a, max_iter=1000)
    for c in (1.0, 3.0):
        yield "svm-rbf", {"kernel": "rbf", "gamma": 0.1, "c": c}, lambda c=c: SVC(
            C=c, gamma=0.1, probability=True, random_state=SEED)
    for k in (5, 15):
        yield "knn", {"k": k, "weights": "distance"}, lambda k=k: KNeighborsClassifier(
            k, weights="distance", n_jobs=THREADS)
    yield "gaussian-nb", {}, GaussianNB


def booster_configs():
    import lightgbm
    import xgboost

    params = {"n_rounds": 200, "max_depth": 6, "learning_rate": 0.1}
    yield "xgboost", params, lambda: xgboost.XGBClassifier(
        n_estimators=200, max_depth=6, learning_rate=0.1, n_jobs=THREADS, random_state=SEED,
        eval_metric="mlogloss")
    yield "lightgbm", params, lambda: lightgbm.LGBMClassifier(
        n_estimators=200, max_depth=6, learning_rate=0.1, n_jobs=THREADS, random_state=SEED,
        verbose=-1)


class Network:
    """runner's mlp, cnn and lstm of the wine sweep, trained with Adam on batches of 64; the
    loss on the validation fold after every epoch is the learning curve."""

    def __init__(self, kind, n_features, n_classes, epochs, lr):
        import torch
        from torch import nn

        self.kind, self.epochs, self.lr = kind, epochs, lr
        if kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(n_features, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
                nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
                nn.Linear(64, n_classes))
        elif kind == "cnn":
            length = n_features // 2 // 2
            self.net = nn.Sequential(
                nn.Unflatten(1, (1, n_features)),
                nn.Conv1d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                nn.Conv1d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                nn.Flatten(), nn.Linear(16 * length, 64), nn.ReLU(), nn.Linear(64, n_classes))
        else:
            self.lstm = nn.LSTM(1, 32, batch_first=True)
            self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, n_classes))
            self.net = nn.ModuleList([self.lstm, self.head])
        self.torch = torch

    def forward(self, x):
        if self.kind == "lstm":
            out, _ = self.lstm(x.unsqueeze(-1))
            return self.head(out[:, -1])
        return self.net(x)

    def fit(self, x, y, xv=None, yv=None):
        torch = self.torch
        xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        curve = []
        for _ in range(self.epochs):
            self.net.train()
            for b in torch.randperm(len(xt)).split(64):
                opt.zero_grad()
                loss_fn(self.forward(xt[b]), yt[b]).backward()
                opt.step()
            if xv is not None:
                self.net.eval()
                with torch.no_grad():
                    curve.append(loss_fn(self.forward(torch.tensor(xv, dtype=torch.float32)),
                                         torch.tensor(yv)).item())
        return curve

    def predict_proba(self, x):
        torch = self.torch
        self.net.eval()
        with torch.no_grad():
            return torch.softmax(self.forward(torch.tensor(x, dtype=torch.float32)), 1).numpy()


def network_configs(n_features, n_classes):
    yield "mlp", {"hidden": "64,64", "epochs": 100}, lambda: Network("mlp", n_features, n_classes, 100, 1e-3)
    yield "cnn", {"channels": 16, "conv_layers": 2, "epochs": 60}, lambda: Network("cnn", n_features, n_classes, 60, 1e-3)
    yield "lstm", {"hidden_size": 32, "epochs": 40}, lambda: Network("lstm", n_features, n_classes, 40, 3e-3)


def fit_one(model, x, y, xv, yv):
    """Fits; the learning curve on the validation rows (boosters and networks), else []."""
    if isinstance(model, Network):
        return model.fit(x, y, xv, yv)
    name = type(model).__name__
    if name == "XGBClassifier" and xv is not None:
        model.fit(x, y, eval_set=[(xv, yv)], verbose=False)
        return model.evals_result()["validation_0"]["mlogloss"]
    if name == "LGBMClassifier" and xv is not None:
        model.fit(x, y, eval_set=[(xv, yv)])
        return model.evals_result_["valid_0"]["multi_logloss"]
    model.fit(x, y)
    return []


def scores(y, proba, classes):
    from sklearn import metrics

    pred = proba.argmax(1)
    return {
        "accuracy": metrics.accuracy_score(y, pred),
        "balanced_accuracy": metrics.balanced_accuracy_score(y, pred),
        "f1_macro": metrics.f1_score(y, pred, average="macro", zero_division=0),
        "f1_weighted": metrics.f1_score(y, pred, average="weighted", zero_division=0),
        "precision_macro": metrics.precision_score(y, pred, average="macro", zero_division=0),
        "recall_macro": metrics.recall_score(y, pred, average="macro", zero_division=0),
        "log_loss": metrics.log_loss(y, proba, labels=range(len(classes))),
        "mcc": metrics.matthews_corrcoef(y, pred),
        "cohen_kappa": metrics.cohen_kappa_score(y, pred),
    }


def log_model(model, x):
    import mlflow

    if isinstance(model, Network):
        mlflow.pytorch.log_model(model.net, name="model", serialization_format="pickle")
    elif type(model).__name__ == "XGBClassifier":
        mlflow.xgboost.log_model(model, name="model", input_example=x[:5])
    elif type(model).__name__ == "LGBMClassifier":
        mlflow.lightgbm.log_model(model, name="model", input_example=x[:5])
    else:
        mlflow.sklearn.log_model(model, name="model", input_example=x[:5], serialization_format="cloudpickle")


def plots(y, pred, curves, classes, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    paths = [os.path.join(out_dir, "confusion_matrix.png")]
    ConfusionMatrixDisplay.from_predictions(y, pred, display_labels=classes)
    plt.savefig(paths[0])
    plt.close("all")
    if any(curves):
        paths.append(os.path.join(out_dir, "learning_curve.png"))
        for i, c in enumerate(curves):
            plt.plot(c, label=f"fold {i}")
        plt.legend()
        plt.savefig(paths[1])
        plt.close("all")
    return paths


def run_config(name, params, make, X, y, classes, splits, work):
    import mlflow
    from sklearn.preprocessing import StandardScaler

    timing = {"train": 0.0, "log": 0.0}
    with mlflow.start_run(run_name=name, nested=True):
        t = time.perf_counter()
        mlflow.log_params({"kind": name, **params})
        timing["log"] += time.perf_counter() - t
        fold_scores, curves, oof_y, oof_pred = [], [], [], []
        for i, (tr, te) in enumerate(splits):
            t = time.perf_counter()
            scaler = StandardScaler().fit(X[tr])
            xs = scaler.transform(X[tr])
            xv = scaler.transform(X[te]) if te is not None else None
            model = make()
            if hasattr(model, "net"):
                import torch
                torch.manual_seed(SEED + i)
            curve = fit_one(model, xs, y[tr], xv, y[te] if te is not None else None)
            proba = model.predict_proba(xv if te is not None else xs)
            timing["train"] += time.perf_counter() - t
            t = time.perf_counter()
            if te is None:
                pred_path = os.path.join(work, "predictions.csv")
                np.savetxt(pred_path, np.column_stack([y, proba.argmax(1), proba]), delimiter=",",
                           header="target,prediction," + ",".join(f"proba_{c}" for c in classes))
                mlflow.log_artifact(pred_path)
                for p in plots(oof_y, oof_pred, curves, classes, work):
                    mlflow.log_artifact(p)
                log_model(model, xs)
            else:
                s = scores(y[te], proba, classes)
                fold_scores.append(s)
                curves.append(curve)
                oof_y.extend(y[te])
                oof_pred.extend(proba.argmax(1))
                mlflow.log_metrics({f"fold{i}/{k}": v for k, v in s.items()})
                for step, v in enumerate(curve):
                    mlflow.log_metric(f"fold{i}/valid/loss", v, step=step)
            timing["log"] += time.perf_counter() - t
        t = time.perf_counter()
        mean = {k: float(np.mean([s[k] for s in fold_scores])) for k in fold_scores[0]}
        mlflow.log_metrics(mean)
        timing["log"] += time.perf_counter() - t
    return mean["accuracy"], timing


def main():
    import mlflow

    data, store = sys.argv[1], sys.argv[2]
    os.makedirs(store, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{os.path.join(store, 'mlflow.db')}")
    mlflow.set_experiment("wine-quality-python-stack")
    import torch
    torch.set_num_threads(THREADS)
    X, y, feats, classes = bench_wine.load(data)
    splits = bench_wine.splits(y, len(classes), SEED)
    configs = [*sklearn_configs(), *booster_configs(), *network_configs(len(feats), len(classes))]
    results, train, log = {}, 0.0, 0.0
    with mlflow.start_run(run_name="sweep"):
        for name, params, make in configs:
            label = name + "".join(f" {k}={v}" for k, v in params.items() if k in ("alpha", "c", "k"))
            accuracy, timing = run_config(name, params, make, X, y, classes, splits, store)
            results[label] = round(accuracy, 4)
            train += timing["train"]
            log += timing["log"]
    print(json.dumps({"configs": len(configs), "wall_s": round(time.perf_counter() - START, 1),
                      "train_s": round(train, 1), "log_s": round(log, 1), "accuracy": results}))


if __name__ == "__main__":
    main()
