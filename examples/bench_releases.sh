#!/usr/bin/env bash
# The wine sweep's wall time with several builds of runner, alternated in one run (this machine
# is noisy), each on a fresh store: bash examples/bench_releases.sh BINARY...
# Build an older release with: git worktree add /tmp/old <commit>; (cd /tmp/old &&
# source tests/build-env.sh && cargo build --release --features "$RUNNER_FEATURES" &&
# cp "$CARGO_TARGET_DIR/release/runner" /tmp/runner-old); a release with the network helper
# (src/bin/runner-torch) needs its runner-torch beside it: copy both into a folder of their own,
# or set RUNNER_TORCH_HELPER.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/build-env.sh >/dev/null 2>&1
repo="$PWD"
for round in 1 2 3; do
  for bin in "$@"; do
    d=$(mktemp -d)
    cp -r configs sweeps "$d"/
    cd "$d"
    s=$(date +%s.%N)
    "$bin" sweep configs/wine.toml --json > out.json 2> err.txt || { echo "$bin failed"; tail -3 err.txt; }
    e=$(date +%s.%N)
    best=$(python3 -c "import json;r=json.load(open('out.json'));m=r['primary_metric'];b=max((x for x in r['runs'] if x['status']=='FINISHED'),key=lambda x:(x['metrics'][m]['mean'] if isinstance(x['metrics'][m],dict) else x['metrics'][m][0]));v=b['metrics'][m];print(b['name'],round(v['mean'] if isinstance(v,dict) else v[0],4),len(r['runs']))")
    echo "round $round $(basename $bin) $(python3 -c "print(round($e-$s,2))") s  best: $best"
    cd "$repo"; rm -rf "$d"
  done
done
