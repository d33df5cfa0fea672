"""How much memory handing a DataFrame to runner costs: 4,000,000 rows x 8 float64 columns
(244 MiB), as a polars and as a pandas frame, through runner_ml's Arrow C stream hand-over
(content hashing included). Run with the interpreter python/install.sh installed into:
    ~/.cache/runner/python-venv/bin/python examples/bench_frames.py polars
    ~/.cache/runner/python-venv/bin/python examples/bench_frames.py pandas   (needs polars or
    pandas installed there, and numpy)
"""
import sys

import numpy as np

import runner_ml._native as native


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


rows = 4_000_000
columns = {f"c{i}": np.random.default_rng(i).random(rows) for i in range(8)}
kind = sys.argv[1] if len(sys.argv) > 1 else "polars"
if kind == "polars":
    import polars as pl
    frame = pl.DataFrame(columns)
else:
    import pandas as pd
    frame = pd.DataFrame(columns)
del columns
before = rss_mib()
source = native.register_frame(frame.__arrow_c_stream__())
after = rss_mib()
print(f"{kind}: frame {rows * 8 * 8 / 2**20:.0f} MiB; RSS {before:.0f} -> {after:.0f} MiB "
      f"(+{after - before:.0f} MiB); {source[:22]}...")
