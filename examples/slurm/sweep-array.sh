#!/usr/bin/env bash
# One sweep split over a Slurm job array: task i trains the configs whose index in the sweep
# files is i mod the array's size (runner reads SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and
# SLURM_ARRAY_TASK_COUNT). All tasks join one sweep; a requeued or failed task, submitted
# again (`sbatch --array=2 examples/slurm/sweep-array.sh`), trains only its configs without a
# FINISHED run. `runner sweep-status NAME` shows where the whole sweep stands.
#
# The store: RUNNER_TRACKING_URI, an MLflow tracking server (http://host:port) that the nodes
# reach, so the tasks run on any nodes (each keeps a replica of it under RUNNER_SERVER_CACHE,
# default ~/.cache/runner/servers); without it, runner's SQLite file sqlite:///mlflow.db in the
# submit folder, which needs every task on the node that holds it (SQLite's WAL is not safe on
# a network file system): then add --nodes=1 and one --nodelist.
#
#   RUNNER_TRACKING_URI=http://mlflow.cluster:5000 sbatch examples/slurm/sweep-array.sh
#   sbatch --nodes=1 --nodelist=$(hostname) examples/slurm/sweep-array.sh
#   RUNNER_CONFIG=configs/wine-regression.toml sbatch examples/slurm/sweep-array.sh
#SBATCH --job-name=runner-sweep
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --output=runner-sweep-%A_%a.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
runner="${RUNNER_BIN:-runner}"
config="${RUNNER_CONFIG:-configs/wine.toml}"
store="${RUNNER_TRACKING_URI:-sqlite:///mlflow.db}"
exec "$runner" sweep "$config" --jobs "${SLURM_CPUS_PER_TASK:-1}" --tracking-uri "$store" "$@"
