"""A KeyboardInterrupt (SIGINT, as a kernel interrupt sends) while a sweep trains: the call
raises KeyboardInterrupt once its runs have ended. Prints when it was sent and caught."""
import json
import os
import signal
import sys
import threading
import time

import runner_ml as runner

work, after_s = sys.argv[1], float(sys.argv[2])
os.chdir(work)
config = {
    "experiment": "interrupt",
    "data": {"source": "builtin:winequality-red", "target": "quality"},
    "cv": {"folds": 5},
    "models": [{"kind": "random_forest", "n_trees": [400, 401, 402, 403, 404, 405]}],
}
started = time.time()
threading.Timer(after_s, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
outcome = "finished"
try:
    runner.sweep(config, jobs=1)
except KeyboardInterrupt:
    outcome = "KeyboardInterrupt"
print(json.dumps({"outcome": outcome, "seconds": time.time() - started}))
