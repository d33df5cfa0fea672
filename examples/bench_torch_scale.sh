#!/usr/bin/env bash
# Networks at 50,000 rows (issue 19): runner's MLP against the same network in PyTorch, in one
# run, on the seeded classification table of examples/scale_data.py (ROWS, default 50000) and
# its fixed 5 folds: 2x64 ReLU, batch norm, dropout 0.1, Adam 1e-3, batches of 64, EPOCHS
# (default 10) epochs, one intra-op thread, the validation loss after every epoch, 5 folds and a
# refit. runner's seconds per fit are its run's training time over 6 fits; Python's the mean of
# its 6 fits (bench_torch_scale.py). Python needs torch, pandas and scikit-learn: the first run
# adds them to the venv of tests/torch-env.sh. By hand, not in CI. Run: bash examples/bench_torch_scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh
source examples/bench_setup.sh
torch_python "sklearn, pandas" scikit-learn==1.9.1 pandas==3.1.1
cargo build --release --locked --features "$RUNNER_FEATURES" --bins 2>/dev/null
bin="$CARGO_TARGET_DIR/release/runner"
rows="${ROWS:-50000}" epochs="${EPOCHS:-10}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" examples/scale_data.py "$rows" classification 7 "$work/data.csv" "$work/folds.csv"
cat >"$work/sweep.toml" <<TOML
[[models]]
kind = "mlp"
name = "mlp"
hidden = "64,64"
activation = "relu"
dropout = 0.1
batch_norm = true
optimizer = "adam"
learning_rate = 0.001
epochs = $epochs
batch_size = 64
threads = 1
TOML
cat >"$work/config.toml" <<TOML
experiment = "torch-scale"
seed = 1
task = "classification"
sweeps = ["sweep.toml"]
[data]
source = "data.csv"
target = "y"
[etl]
impute = "median"
scale = "standard"
[cv]
folds = 5
assignments = "folds.csv"
importance = "none"
TOML
(cd "$work" && "$bin" sweep config.toml --jobs 1 --json >report.json 2>/dev/null)
"$py" - "$work/report.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
print(f"runner: {run['fit_seconds'] / 6:.3f} s per fit, accuracy {run['metrics']['accuracy']['mean']:.4f}")
PY
echo "PyTorch: $("$py" examples/bench_torch_scale.py "$work/data.csv" "$work/folds.csv" "$epochs")"
