"""A torch of another release than runner_ml's libtorch, imported before runner_ml and after it,
in two fresh interpreters: each trains an MLP through runner_ml, whose networks train in its
helper program, and the interpreter never maps a libtorch. The torch here is a stand-in package
(a version file), as the CI machine has one torch. Prints what each order saw, as JSON."""
import json
import os
import subprocess
import sys
import tempfile

folder = tempfile.mkdtemp()
os.makedirs(os.path.join(folder, "torch"))
with open(os.path.join(folder, "torch", "__init__.py"), "w") as f:
    f.write("__version__ = '2.4.1+cu121'\n")

train = """
import json, sys
import runner_ml
config = {"experiment": "beside", "seed": 3, "data": {"source": "builtin:winequality-red",
          "target": "quality"}, "cv": {"folds": 2}, "tracking": {"uri": "sqlite:///beside.db"}}
result = runner_ml.sweep(config, sweeps=[{"kind": "mlp", "epochs": 3, "hidden": "16"}],
                         verbose=False)
run = result.runs[0]
maps = open("/proc/self/maps").read()
print(json.dumps({"status": run.status, "accuracy": run.metrics["accuracy"],
                  "torch": sys.modules["torch"].__version__,
                  "libtorch_mapped": "libtorch" in maps}))
"""
orders = {
    "torch_before": "import torch\n" + train,
    "torch_after": train.replace("import runner_ml\n", "import runner_ml\nimport torch\n", 1),
}
out = {}
for name, code in orders.items():
    work = tempfile.mkdtemp()
    env = dict(os.environ, PYTHONPATH=folder)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=work)
    last = p.stdout.strip().splitlines()[-1:] or ["{}"]
    out[name] = {"rc": p.returncode, "stderr": p.stderr.strip()[-2000:], "seen": json.loads(last[0])}
print(json.dumps(out))
