"""Peak memory at a million rows (issue 19's target: at most 2x the raw numeric data + 200 MiB).

    python3 examples/bench_memory.py [RUNNER ...]

Writes two seeded tables once (1M rows x 3 and x 20 numeric columns and a binary target, under
~/.cache/runner/bench-memory), then runs `runner sweep` with a logistic regression and 2 folds
on each, for every binary given (default: the build's runner), alternated, and prints each one's
peak RSS (the largest of the process and anything it waited for, from getrusage) beside the
target. Runs by hand, not in CI."""
import math
import os
import random
import resource
import subprocess
import sys
import tempfile

ROWS = 1_000_000
cache = os.path.join(os.path.expanduser("~"), ".cache", "runner", "bench-memory")
CONFIG = """experiment = "mem"
seed = 1
[data]
source = "{source}"
target = "y"
[cv]
folds = 2
[[models]]
kind = "logistic_regression"
"""


def table(columns):
    path = os.path.join(cache, f"rows{ROWS}x{columns}.csv")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    rng = random.Random(columns)
    weights = [rng.gauss(0, 1) for _ in range(columns)]
    names = [f"x{i}" for i in range(columns)]
    with open(path + ".partial", "w") as f:
        f.write(",".join(names + ["y"]) + "\n")
        for _ in range(ROWS):
            x = [rng.gauss(0, 1) for _ in range(columns)]
            z = sum(w * v for w, v in zip(weights, x)) + rng.gauss(0, 1)
            y = 1 if 1 / (1 + math.exp(-z)) > 0.5 else 0
            f.write(",".join(f"{v:.6f}" for v in x) + f",{y}\n")
    os.replace(path + ".partial", path)
    return path


def peak_mib(binary, source):
    """Peak RSS of one sweep, in a fresh Python process (ru_maxrss of children is a maximum
    over every child so far)."""
    work = tempfile.mkdtemp(prefix="bench-memory-")
    with open(os.path.join(work, "config.toml"), "w") as f:
        f.write(CONFIG.format(source=source))
    code = ("import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
            "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, binary, "sweep", "config.toml"],
                         cwd=work, capture_output=True, text=True, check=True)
    rc, kib = out.stdout.split()
    if rc != "0":
        sys.exit(f"{binary} sweep failed ({rc}) in {work}:\n{out.stderr}")
    return int(kib) / 1024


def main():
    binaries = sys.argv[1:] or [os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "runner")]
    for columns in (3, 20):
        source = table(columns)
        raw = ROWS * columns * 8 / 2**20
        target = 2 * raw + 200
        for binary in binaries:
            peak = peak_mib(binary, source)
            verdict = "within" if peak <= target else "OVER"
            print(f"1M x {columns}: {binary}: peak {peak:.0f} MiB, target {target:.0f} MiB "
                  f"(raw {raw:.1f} MiB): {verdict}", flush=True)


if __name__ == "__main__":
    main()
