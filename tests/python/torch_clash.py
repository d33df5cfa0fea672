"""A torch of another release than runner_ml's libtorch, imported after runner_ml and before
it, in two fresh interpreters: both imports fail with an ImportError that says why. The torch
here is a stand-in package (its version file is what the check reads), so no second libtorch is
ever loaded. Prints what each order raised, as JSON."""
import json
import os
import subprocess
import sys
import tempfile

folder = tempfile.mkdtemp()
os.makedirs(os.path.join(folder, "torch"))
with open(os.path.join(folder, "torch", "__init__.py"), "w") as f:
    f.write("__version__ = '2.4.1+cu121'\n")
with open(os.path.join(folder, "torch", "version.py"), "w") as f:
    f.write("__version__ = '2.4.1+cu121'\n")

orders = {
    "torch_after": "import runner_ml\nimport torch\n",
    "torch_before": "import torch\nimport runner_ml\n",
    "runner_alone": "import runner_ml\nprint('linked', runner_ml._native.libtorch_version)\n",
}
out = {}
for name, code in orders.items():
    env = dict(os.environ, PYTHONPATH=folder)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    out[name] = {"rc": p.returncode, "stderr": p.stderr.strip().splitlines()[-1:] or [""],
                 "stdout": p.stdout.strip()}
print(json.dumps(out))
