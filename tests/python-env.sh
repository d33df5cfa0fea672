#!/usr/bin/env bash
# Sourced by tests/run.sh: builds and installs the Python package (python/install.sh) into its
# own venv (~/.cache/runner/python-venv, never the caller's active one), adds the Jupyter parts
# the notebook test runs (nbclient, nbformat, ipykernel) and polars, and exports RUNNER_PYTHON. Idempotent.
RUNNER_PYTHON="$(VIRTUAL_ENV="" bash python/install.sh | tail -n 1)"
if ! "$RUNNER_PYTHON" -c 'import nbclient, nbformat, ipykernel, polars' >/dev/null 2>&1; then
  echo "setup: adding nbclient, nbformat, ipykernel and polars to $RUNNER_PYTHON's venv" >&2
  "$RUNNER_PYTHON" -m pip install -q --disable-pip-version-check \
    nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 polars==2.1.0
fi
export RUNNER_PYTHON
