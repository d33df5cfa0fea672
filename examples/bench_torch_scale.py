"""The Python side of examples/bench_torch_scale.sh: runner's wine MLP (2x64 ReLU, batch norm,
dropout 0.1, Adam 1e-3, batches of 64) in PyTorch, on a table of examples/scale_data.py and its
fixed 5 folds plus a refit on every row, one intra-op thread, the loss on the validation fold
after every epoch (as runner logs it). Preprocessing as bench_scale.py's (median imputation,
one-hot categories, standard scaling), fitted on each training fold.

usage: bench_torch_scale.py DATA.csv FOLDS.csv EPOCHS

Prints one JSON line: seconds per fit (the mean over the 6 fits of preprocessing, training and
prediction) and the mean accuracy over the 5 folds.
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from bench_scale import preprocess  # noqa: E402

torch.set_num_threads(1)
data, folds, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
frame = pd.read_csv(data)
classes, y = np.unique(frame.pop("y").to_numpy(), return_inverse=True)
fold = pd.read_csv(folds).sort_values("row")["fold"].to_numpy()


def fit(train, test, seed):
    torch.manual_seed(seed)
    pre = preprocess(frame, True).fit(frame[train])
    xt = torch.tensor(pre.transform(frame[train]), dtype=torch.float32)
    yt = torch.tensor(y[train])
    width = xt.shape[1]
    net = nn.Sequential(nn.Linear(width, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
                        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
                        nn.Linear(64, len(classes)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xv = torch.tensor(pre.transform(frame[test]), dtype=torch.float32) if test is not None else None
    yv = torch.tensor(y[test]) if test is not None else None
    for _ in range(epochs):
        net.train()
        for b in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            loss_fn(net(xt[b]), yt[b]).backward()
            opt.step()
        if xv is not None:
            net.eval()
            with torch.no_grad():
                loss_fn(net(xv), yv).item()
    if xv is None:
        return None
    net.eval()
    with torch.no_grad():
        return float((net(xv).argmax(1).numpy() == y[test]).mean())


seconds, scores = [], []
for k in [*range(5), None]:
    start = time.perf_counter()
    if k is None:
        fit(np.ones(len(y), bool), None, 99)
    else:
        scores.append(fit(fold != k, fold == k, k))
    seconds.append(time.perf_counter() - start)
print(json.dumps({"seconds_per_fit": round(statistics.mean(seconds), 3), "accuracy": round(statistics.mean(scores), 4),
                  "torch": torch.__version__}))
