"""The Python client's side of examples/bench_server.sh: the same workload as bench_rest.rs
(RUNS runs, 10 params and 5 tags each, 3 metrics x 100 steps streamed or in bulk, then
finished) with MlflowClient.log_batch. Prints one JSON line.

Usage: python bench_server.py URL streamed|streamed-async|bulk RUNS
"""
import json
import os
import sys
import time

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

url, mode, n_runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = MlflowClient(tracking_uri=url)
exp = client.create_experiment(f"bench-python-{mode}-{os.getpid()}")
started = time.perf_counter()
for i in range(n_runs):
    run = client.create_run(exp, run_name=f"run{i}", tags={f"tag_{t}": str(t) for t in range(5)})
    rid = run.info.run_id
    client.log_batch(rid, params=[Param(f"param_{p}", str(p * i)) for p in range(10)])

    def step_points(step):
        now = int(time.time() * 1000)
        return [Metric(k, 1.0 / (step + 1), now, step) for k in ("loss", "val_loss", "accuracy")]

    if mode == "bulk":
        client.log_batch(rid, metrics=[m for s in range(100) for m in step_points(s)])
    elif mode == "streamed-async":
        # MLflow's asynchronous logging (a queue and a sender thread, as runner's tracker).
        pending = [client.log_batch(rid, metrics=step_points(s), synchronous=False) for s in range(100)]
        for p in pending:
            p.wait()
    else:
        for s in range(100):
            client.log_batch(rid, metrics=step_points(s))
    client.set_terminated(rid, "FINISHED")
s = time.perf_counter() - started
print(json.dumps({"client": "python", "mode": mode, "runs": n_runs, "seconds": s,
                  "runs_per_s": n_runs / s, "metric_values_per_s": n_runs * 300 / s}))
