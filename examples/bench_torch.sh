#!/usr/bin/env bash
# Benchmark: train time of the wine MLP through runner (tch/libtorch) against the same network
# in PyTorch (Python), on this machine, in one run. Both: red wine, stratified 5-fold CV plus a
# refit (6 fits), MLP 2x64 ReLU, batch norm, dropout 0.1, Adam 1e-3, 100 epochs, batch 64, one
# intra-op thread, inputs standardised inside the network, validation loss every epoch.
# Then examples/torch_check.py runs runner's TorchScript export in PyTorch.
# Python needs the full torch wheel: the first run adds its Python and CUDA library dependencies
# (about 3 GB) to the lean venv of tests/torch-env.sh. Run: bash examples/bench_torch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
source examples/bench_setup.sh
torch_python numpy
cargo build --release --locked --features "$RUNNER_FEATURES" --bins 2>/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && "$CARGO_TARGET_DIR/release/runner" sweep "$OLDPWD/configs/wine.toml" --only mlp --jobs 1 --json >"$work/r.json" 2>/dev/null)
"$CARGO_TARGET_DIR/release/runner" --tracking-uri "sqlite:///$work/mlflow.db" reload-etl v1 --out "$work/wine.csv" >/dev/null
"$py" - "$work/r.json" "$work/wine.csv" <<'PY'
import json, sys, time
import numpy as np, torch
from torch import nn
torch.set_num_threads(1)
report = json.load(open(sys.argv[1]))
sys.path.insert(0, "examples")
import bench_wine
X, y, feats, classes = bench_wine.load(sys.argv[2], np.float32)
splits = bench_wine.splits(y, len(classes))
def fit(tr, te, seed):
    torch.manual_seed(seed)
    xt, yt = torch.tensor(X[tr]), torch.tensor(y[tr])
    mean, std = xt.mean(0), xt.std(0, unbiased=False).clamp_min(1e-12)
    net = nn.Sequential(nn.Linear(len(feats), 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1),
                        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, len(classes)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xs = (xt - mean) / std
    xv = (torch.tensor(X[te]) - mean) / std if te is not None else None
    yv = torch.tensor(y[te]) if te is not None else None
    for epoch in range(100):
        net.train()
        total = 0.0
        for b in torch.randperm(len(tr)).split(64):
            opt.zero_grad(); loss = loss_fn(net(xs[b]), yt[b]); loss.backward(); opt.step()
            total += loss.item() * len(b)  # the epoch's train loss, as runner logs it
        if xv is not None:
            net.eval()
            with torch.no_grad():
                out = net(xv); loss_fn(out, yv).item(); (out.argmax(1) == yv).float().mean().item()
    if te is None:
        return None
    with torch.no_grad():
        return (net(xv).argmax(1).numpy() == y[te]).mean()
t = time.perf_counter()
accs = [a for a in (fit(tr, te, s) for s, (tr, te) in enumerate(splits)) if a is not None]
py = time.perf_counter() - t
ours = next(r for r in report["runs"] if r["name"] == "mlp")
print(f"mlp runner {ours['fit_seconds']:.2f} s (accuracy {ours['metrics']['accuracy']['mean']:.4f}) | PyTorch {torch.__version__} {py:.2f} s (accuracy {np.mean(accs):.4f}) for 6 fits x 100 epochs, 1 thread")
PY
pt=$(ls "$work"/mlruns/*/*/artifacts/model_t*.pt | head -n 1)
preds=$(ls "$(dirname "$pt")"/predictions_t*.csv)
"$py" examples/torch_check.py "$pt" "$work/wine.csv" quality "$preds"
