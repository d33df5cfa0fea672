"""runner_ml's native module links one libtorch build (that of the torch wheel it was built
with, for the MLP, CNN and LSTM kinds). A process cannot hold two different libtorch builds:
both are loaded under the same library name, so the second user gets the first one's code.
So PyTorch and runner_ml share a process only when they are the same torch version; otherwise
the import that would mix them fails with an ImportError that says so, before anything loads.
"""

import importlib.machinery
import os
import sys
from typing import Optional


def _release(version: str) -> str:
    """``2.13.0`` of ``2.13.0+cu130``: local builds (CPU, CUDA) of one release share its ABI."""
    return version.split("+")[0]


def _torch_version_at(folder: str) -> Optional[str]:
    try:
        with open(os.path.join(folder, "version.py"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("__version__"):
                    return line.split("=", 1)[1].strip().strip("'\"")
    except OSError:
        return None
    return None


def _clash(theirs: str, ours: str) -> str:
    return (f"PyTorch {theirs} and runner_ml cannot share this process: runner_ml's native "
            f"module links libtorch {ours} (the torch wheel it was built with), and a process "
            f"holds only one libtorch. Use torch {_release(ours)} in this environment, or "
            f"rebuild runner_ml against this torch (LIBTORCH=<its torch folder> bash "
            f"python/install.sh), or run runner_ml in a process without torch.")


def explain_failed_import(error: ImportError) -> None:
    """A native module that cannot load beside an imported torch: say why."""
    torch = sys.modules.get("torch")
    if torch is not None:
        theirs = getattr(torch, "__version__", "?")
        raise ImportError(_clash(theirs, "(unknown)") + f" The loader said: {error}") from error


class _TorchGuard:
    """Refuses to import a torch of another release than the linked libtorch's."""

    def __init__(self, ours: str):
        self.ours = ours

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        folders = list(spec.submodule_search_locations or []) if spec else []
        theirs = _torch_version_at(folders[0]) if folders else None
        if theirs and _release(theirs) != _release(self.ours):
            raise ImportError(_clash(theirs, self.ours))
        return None


def install(ours: str) -> None:
    """Checks a torch already imported, and guards later imports of torch."""
    if not ours:
        return
    torch = sys.modules.get("torch")
    if torch is not None:
        theirs = getattr(torch, "__version__", "")
        if theirs and _release(theirs) != _release(ours):
            raise ImportError(_clash(theirs, ours))
        return
    if not any(isinstance(f, _TorchGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchGuard(ours))
