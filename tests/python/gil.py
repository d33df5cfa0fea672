"""A Python thread counts while a sweep trains: with the GIL released it keeps counting.
Prints the ticks counted during the sweep and the sweep's wall time."""
import json
import os
import sys
import threading
import time

import runner_ml as runner

os.chdir(sys.argv[1])
ticks = 0
stop = threading.Event()


def count():
    global ticks
    while not stop.is_set():
        ticks += 1
        time.sleep(0.01)


config = {
    "experiment": "gil",
    "data": {"source": "builtin:winequality-red", "target": "quality"},
    "cv": {"folds": 5},
    "models": [{"kind": "random_forest", "n_trees": [150, 151]}],
}
thread = threading.Thread(target=count)
started = time.time()
thread.start()
result = runner.sweep(config, jobs=1, verbose=False)
seconds = time.time() - started
stop.set()
thread.join()
print(json.dumps({"ticks": ticks, "seconds": seconds, "runs": len(result.runs)}))
