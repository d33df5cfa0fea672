"""runner from Python and Jupyter: sweeps, runs, replays and predictions, on the same Rust code
as the ``runner`` command line, in this process.

    import runner_ml as runner

    result = runner.sweep({
        "experiment": "wine",
        "data": {"source": "builtin:winequality-red", "target": "quality"},
        "models": [{"kind": "random_forest", "n_trees": [50, 100]}],
    })
    result.leaderboard          # a DataFrame, best first
    runner.replay("t1", check=True)
    runner.predict("t1", new_rows)

The package is ``runner_ml`` (PyPI has an unrelated ``runner``); ``import runner_ml as runner``
reads like the command line. ``runs``, ``replay``, ``predict`` and ``reload_etl`` read the
store of the last ``sweep`` in this process unless given ``tracking_uri`` (then, as the CLI:
``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``; an ``http(s)://`` one is an MLflow server
that is the store). Configs are the CLI's: a TOML file's path, TOML text, or a dict
of the same keys, checked by the same code. ``data=`` takes a pandas or polars DataFrame.
A KeyboardInterrupt (Ctrl-C, a kernel interrupt) stops a sweep: the runs in progress and those
not started end KILLED, then the KeyboardInterrupt is raised. The GIL is released while runner
works.
"""

from __future__ import annotations

import html
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

# The networks (MLP, CNN, LSTM) train in runner's helper program, the only part that links
# libtorch: this process never loads it, so any PyTorch can be imported beside runner_ml. The
# wheel carries the helper beside this file (python/install.sh puts it there).
_helper = Path(__file__).with_name("runner-torch")
if _helper.is_file():
    os.environ.setdefault("RUNNER_TORCH_HELPER", str(_helper))

from . import _native  # noqa: E402
__version__ = _native.__version__
__all__ = [
    "sweep",
    "runs",
    "models",
    "replay",
    "predict",
    "reload_etl",
    "eda",
    "SweepResult",
    "EdaResult",
    "Run",
    "ReplayResult",
    "RunnerError",
    "ConfigError",
]


class RunnerError(RuntimeError):
    """A command failed: a store that cannot be read or written, a run that cannot be found."""


class ConfigError(RunnerError, ValueError):
    """A mistake in the config, a sweep, the data or an argument, found before anything was
    written (the CLI's exit code 2).

    ``key`` is the key path (``"cv.folds"``, ``"data.target"``), ``file`` and ``line`` where the
    config is a file or TOML text (``line`` is ``None`` for a dict), ``message`` the reason.
    """

    def __init__(self, text: str, *, message: str = "", key: Optional[str] = None,
                 file: Optional[str] = None, line: Optional[int] = None):
        super().__init__(text)
        self.message = message or text
        self.key = key
        self.file = file
        self.line = line


# --- calling the native module -------------------------------------------------------------

_STANDS_FOR = "notebook.toml"


def _call(function, options: Mapping[str, Any], given: str = "path") -> Dict[str, Any]:
    doc = json.loads(function(json.dumps(options)))
    error = doc.get("error") if isinstance(doc, dict) else None
    if error is None:
        return doc
    if error["kind"] != "config":
        # The CLI's advice, in this API's words.
        text = error["text"].replace("pass --input PATH to a copy of the same data",
                                     "pass a copy of the same data as data=")
        raise RunnerError(text)
    key, file, line = error.get("key"), error.get("file"), error.get("line")
    text = error["text"]
    stands_for = os.path.join(os.getcwd(), _STANDS_FOR)
    if given == "json" and _STANDS_FOR in (file or ""):
        # Line numbers of a dict's TOML rendering mean nothing to its author: name the key.
        file, line = "config dict", None
        text = f"config dict: key {key}: {error['message']}" if key else f"config dict: {error['message']}"
    elif given == "toml" and file and file.startswith(stands_for):
        file = "config text" + file[len(stands_for):]
        text = text.replace(stands_for, "config text")
    raise ConfigError(text, message=error.get("message", ""), key=key, file=file, line=line)


# --- the store ----------------------------------------------------------------------------

_last_store: Optional[str] = None


def _store(tracking_uri: Optional[str]) -> Optional[str]:
    """The store a call reads: the one given, else the store of this process's last sweep,
    else what the CLI uses (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)."""
    return tracking_uri or _last_store


def _store_uri(store: str) -> str:
    """The URI of the store a result names: an MLflow server's URL as it is (the server is the
    store), else its SQLite file's."""
    if store.startswith(("http://", "https://")):
        return store
    return "sqlite:///" + os.path.abspath(store)


# --- DataFrames ----------------------------------------------------------------------------

def _frame_source(data: Any) -> str:
    """Hands a DataFrame to runner through Arrow's C stream interface (``__arrow_c_stream__``:
    pandas >= 2.2 with pyarrow, polars, pyarrow tables), without copying its buffers where the
    frame is already Arrow-backed; runner keeps it for this process under the sha256 of its
    content (column names, types and values), and returns its source, ``frame:<sha256>``."""
    if type(data).__module__.split(".")[0] == "pandas":
        # A pandas index is not a column of the table (to_parquet(index=False) drops it too).
        data = data.reset_index(drop=True)
    export = getattr(data, "__arrow_c_stream__", None)
    if export is None:
        raise TypeError(
            f"data must be a pandas (>= 2.2, with pyarrow) or polars DataFrame, or anything with "
            f"__arrow_c_stream__, not {type(data).__name__}; for a file, set data.source")
    return _native.register_frame(export())


def _frame_library():
    try:
        import pandas
        return pandas
    except ImportError:
        pass
    try:
        import polars
        return polars
    except ImportError:
        raise RunnerError("tables are returned as DataFrames: install pandas or polars") from None


def _records_frame(records: List[Dict[str, Any]], columns: Sequence[str]):
    lib = _frame_library()
    if lib.__name__ == "pandas":
        return lib.DataFrame.from_records(records, columns=list(columns))
    return lib.DataFrame([{c: r.get(c) for c in columns} for r in records])


def _read_csv_text(text: str):
    lib = _frame_library()
    return lib.read_csv(io.StringIO(text))


def _read_parquet(path: str):
    return _frame_library().read_parquet(path)


# --- results -------------------------------------------------------------------------------

class Run:
    """One training run: ``version`` (``"t3"``), ``name``, ``kind``, ``status``, ``metrics``
    (``{name: (mean, std)}`` over folds), ``fold_metrics`` (``{name: [per fold]}``),
    ``per_class`` rows, ``error``, ``run_uuid`` and ``artifact_dir``."""

    def __init__(self, doc: Dict[str, Any], artifact_dir: Optional[str]):
        self.doc = doc
        self.version: str = doc["version"]
        self.name: str = doc["name"]
        self.kind: str = doc["kind"]
        self.status: str = doc["status"]
        self.error: Optional[str] = doc.get("error")
        self.run_uuid: str = doc["run_uuid"]
        self.pruned = doc.get("pruned")
        self.metrics = {k: (v["mean"], v["std"]) for k, v in doc.get("metrics", {}).items()}
        self.fold_metrics: Dict[str, List[float]] = doc.get("fold_metrics", {})
        self.holdout: Dict[str, float] = doc.get("holdout", {})
        self.fit_seconds: float = doc.get("fit_seconds", 0.0)
        self.artifact_dir = artifact_dir

    @property
    def artifacts(self) -> List[str]:
        """The run's artifact files (model, predictions, plots), as paths."""
        if not self.artifact_dir or not os.path.isdir(self.artifact_dir):
            return []
        return sorted(str(p) for p in Path(self.artifact_dir).rglob("*") if p.is_file())

    def fold_table(self):
        """Every metric of every CV fold, a row per fold."""
        folds = max((len(v) for v in self.fold_metrics.values()), default=0)
        names = sorted(self.fold_metrics)
        rows = [dict({"fold": i + 1}, **{m: self.fold_metrics[m][i] for m in names
                                         if i < len(self.fold_metrics[m])}) for i in range(folds)]
        return _records_frame(rows, ["fold"] + names)

    def per_class(self):
        """Precision, recall, F1 and support of each class (classification)."""
        rows = self.doc.get("per_class", [])
        columns = list(rows[0].keys()) if rows else ["class"]
        return _records_frame(rows, columns)

    def __repr__(self) -> str:
        return f"Run({self.version} {self.name} {self.kind} {self.status})"


class SweepResult:
    """What ``sweep`` did: ``runs`` (every config's run, by number), ``leaderboard`` (a
    DataFrame, best first), ``best``, the ETL version, the store and the sweep's status line.
    ``report`` is the CLI's ``runner sweep --json`` document."""

    def __init__(self, doc: Dict[str, Any]):
        self.report: Dict[str, Any] = doc["report"]
        self.status_line: str = doc["status_line"]
        self.failed: bool = doc["failed"]
        dirs = doc.get("artifact_dirs", {})
        self.runs = [Run(r, dirs.get(r["run_uuid"])) for r in self.report["runs"]]
        self.primary_metric: str = self.report["primary_metric"]
        self.higher_is_better: bool = self.report["higher_is_better"]
        self.etl_version: str = self.report["etl_version"]
        self.store: str = self.report["store"]
        self.task: str = self.report["task"]
        self.sweep: Optional[Dict[str, Any]] = self.report.get("sweep")

    def ranked(self) -> List[Run]:
        """Finished runs best first by the primary metric, then the others."""
        metric = self.primary_metric

        def score(run: Run) -> float:
            mean = run.metrics.get(metric, (float("nan"), 0.0))[0]
            return -mean if self.higher_is_better else mean

        done = [r for r in self.runs if r.status == "FINISHED" and metric in r.metrics]
        rest = [r for r in self.runs if r not in done]
        return sorted(done, key=score) + rest

    @property
    def best(self) -> Optional[Run]:
        ranked = self.ranked()
        return ranked[0] if ranked and ranked[0].status == "FINISHED" else None

    @property
    def leaderboard(self):
        """A row per run, best first: rank, run, name, kind, status, then every metric's mean
        and std over the CV folds."""
        metrics = sorted({m for r in self.runs for m in r.metrics},
                         key=lambda m: (m != self.primary_metric, m))
        columns = ["rank", "run", "name", "kind", "status", "fit_seconds"]
        rows = []
        for rank, run in enumerate(self.ranked(), start=1):
            row = {"rank": rank, "run": run.version, "name": run.name, "kind": run.kind,
                   "status": run.status, "fit_seconds": run.fit_seconds}
            for m in metrics:
                if m in run.metrics:
                    row[m], row[f"{m}_std"] = run.metrics[m]
            rows.append(row)
        for m in metrics:
            columns += [m, f"{m}_std"]
        return _records_frame(rows, columns)

    def run(self, version: str) -> Run:
        for r in self.runs:
            if r.version == version:
                return r
        raise KeyError(f"{version} is not a run of this sweep; runs: {[r.version for r in self.runs]}")

    def _repr_html_(self) -> str:
        board = self.leaderboard
        table = board.to_html(index=False) if hasattr(board, "to_html") else board._repr_html_()
        head = (f"<p><b>{html.escape(self.report['experiment'])}</b>: {len(self.runs)} runs, "
                f"ETL {html.escape(self.etl_version)}, {html.escape(self.task)}, ranked by "
                f"{html.escape(self.primary_metric)}; store {html.escape(self.store)}</p>")
        return head + table + f"<p>{html.escape(self.status_line)}</p>"

    def __repr__(self) -> str:
        best = self.best
        top = f", best {best.version} {best.name} {self.primary_metric}={best.metrics[self.primary_metric][0]:.4f}" if best else ""
        return f"SweepResult({len(self.runs)} runs{top})"


class ReplayResult:
    """A replayed run: ``original`` and ``replay`` (``"t3"``, ``"t9"``), ``identical`` (every
    fold metric bit for bit), ``metrics`` (original against replay per fold) and ``run``."""

    def __init__(self, doc: Dict[str, Any]):
        self.doc = doc
        self.original: str = doc["original"]
        self.replay: str = doc["replay"]
        self.status: str = doc["status"]
        self.identical: bool = doc["identical"]
        self.changes: List[str] = doc["changes"]
        self.run = Run(doc["run"], None)

    @property
    def metrics(self):
        rows = self.doc["metrics"]
        return _records_frame(rows, list(rows[0].keys()) if rows else [])

    def __repr__(self) -> str:
        same = "identical" if self.identical else "differs"
        return f"ReplayResult({self.original} -> {self.replay}, {self.status}, {same})"


class EdaResult:
    """A data report, logged as the run ``eda-vN``: ``report`` (what ``eda.json`` holds: the
    target's distribution, each column's statistics and missing share, correlations,
    clusters), ``markdown`` and ``plots`` (``{name: SVG text}``); shown whole in Jupyter."""

    def __init__(self, doc: Dict[str, Any]):
        self.run_uuid: str = doc["run_uuid"]
        self.etl_version: str = doc["etl_version"]
        self.report: Dict[str, Any] = doc["report"]
        self.markdown: str = doc["markdown"]
        self.plots: Dict[str, str] = {name: svg for name, svg in doc["plots"]}
        self.store: str = doc["store"]

    def _repr_markdown_(self) -> str:
        import base64
        text = self.markdown
        for name, svg in self.plots.items():
            inline = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
            text = text.replace(f"]({name})", f"]({inline})")
        return text

    def __repr__(self) -> str:
        return f"EdaResult({self.etl_version}, {len(self.plots)} plots, run {self.run_uuid})"


# --- the commands --------------------------------------------------------------------------

ConfigLike = Union[str, os.PathLike, Mapping[str, Any]]


def _config_options(config: ConfigLike) -> Dict[str, Any]:
    if isinstance(config, Mapping):
        return {"config_kind": "json", "config": json.dumps(config)}
    if isinstance(config, os.PathLike) or (isinstance(config, str) and "\n" not in config
                                           and "=" not in config):
        return {"config_kind": "path", "config": os.fspath(config)}
    if isinstance(config, str):
        return {"config_kind": "toml", "config": config}
    raise TypeError(f"config must be a path, TOML text or a dict, not {type(config).__name__}")


def _with_data(options: Dict[str, Any], data: Any, sets: List[str]) -> None:
    """A DataFrame as the config's ``data.source``: written into a dict config, else given as
    ``--set data.source=...``."""
    if data is None:
        return
    source = _frame_source(data)
    if options["config_kind"] == "json":
        merged = json.loads(options["config"])
        merged["data"] = dict(merged.get("data") or {}, source=source)
        options["config"] = json.dumps(merged)
    else:
        sets.append(f"data.source={json.dumps(source)}")


def sweep(config: ConfigLike, *, data: Any = None, sweeps: Optional[Sequence[Mapping[str, Any]]] = None,
          set: Optional[Sequence[str]] = None, only: Optional[Sequence[str]] = None,
          jobs: Optional[int] = None, tracking_uri: Optional[str] = None, restart: bool = False,
          smoke: bool = False, verbose: bool = True) -> SweepResult:
    """Trains every model config of the config's sweeps with cross-validation and logs the
    runs, as ``runner sweep CONFIG`` does; returns the whole sweep's result.

    ``config``: a TOML file's path, TOML text, or a dict with the same keys. ``sweeps``: model
    configs given inline (``[{"kind": "random_forest", "n_trees": [50, 100]}]``), trained after
    the config's own. ``data``: a pandas or polars DataFrame instead of ``data.source``.
    ``set``: overrides as on the command line (``["cv.folds=3", "models.n_trees=50"]``).
    ``only``: the configs whose names start with one of these. ``restart``: a new sweep
    rather than continuing the stored one of the same name. ``verbose``: print a line per run.
    """
    options = _config_options(config)
    from_dict = options["config_kind"] == "json"
    sets = list(set or [])
    if sweeps is not None:
        if not from_dict:
            raise TypeError("sweeps= goes with a dict config; in TOML, write [[models]] entries")
        merged = dict(config)  # type: ignore[arg-type]
        merged["models"] = list(merged.get("models", [])) + [dict(m) for m in sweeps]
        options["config"] = json.dumps(merged)
    _with_data(options, data, sets)
    options.update({"set": sets, "only": list(only or []), "jobs": jobs,
                    "tracking_uri": tracking_uri, "restart": restart, "smoke": smoke,
                    "verbose": verbose})
    result = SweepResult(_call(_native.sweep, options, options["config_kind"]))
    global _last_store
    _last_store = _store_uri(result.store)
    return result


def eda(config: ConfigLike, *, data: Any = None, set: Optional[Sequence[str]] = None,
        tracking_uri: Optional[str] = None) -> EdaResult:
    """The data report of the config's data and ETL (or ``data``, a DataFrame), logged as a run
    tagged EDA and linked to the ETL version, as ``runner eda CONFIG``."""
    options = _config_options(config)
    sets = list(set or [])
    _with_data(options, data, sets)
    options.update({"set": sets, "tracking_uri": tracking_uri})
    result = EdaResult(_call(_native.eda, options, options["config_kind"]))
    global _last_store
    _last_store = _store_uri(result.store)
    return result


def runs(*, experiment: Optional[str] = None, status: Optional[str] = None,
         sort: Optional[str] = None, limit: Optional[int] = None,
         tracking_uri: Optional[str] = None):
    """The store's training runs as a DataFrame, as ``runner runs``: run, name, kind, ETL
    version, status, then each metric's mean."""
    doc = _call(_native.list_runs, {"experiment": experiment, "status": status, "sort": sort,
                                    "limit": limit, "tracking_uri": _store(tracking_uri)})
    metrics = sorted({m for r in doc["runs"] for m in (r.get("metrics") or {})})
    rows = []
    for r in doc["runs"]:
        row = {"run": r["version"], "experiment": r["experiment"], "name": r["name"],
               "kind": r["kind"], "etl_version": r["etl_version"], "status": r["status"],
               "run_uuid": r["run_uuid"]}
        for m, v in (r.get("metrics") or {}).items():
            row[m] = v["mean"]
        rows.append(row)
    columns = ["run", "experiment", "name", "kind", "etl_version", "status", "run_uuid"] + metrics
    return _records_frame(rows, columns)


def models():
    """Every model kind as a DataFrame, as ``runner models``: kind, tasks, backend, help and its
    parameters with their defaults."""
    doc = json.loads(_native.list_models())
    rows = [{"kind": k["kind"], "tasks": ", ".join(k["tasks"]), "backend": k["backend"],
             "help": k["help"], "params": {p["name"]: p["default"] for p in k["params"]}}
            for k in doc["kinds"]]
    return _records_frame(rows, ["kind", "tasks", "backend", "help", "params"])


def replay(version: str, *, data: Any = None, check: bool = False,
           set: Optional[Sequence[str]] = None, tracking_uri: Optional[str] = None) -> ReplayResult:
    """Retrains run ``version`` (``"t3"``) exactly from its record on its verified ETL version,
    as a new run, as ``runner replay``; ``check=True`` raises ``RunnerError`` unless every fold
    metric is identical bit for bit. ``data``: the DataFrame again, for a version built from a
    frame in another process (this process keeps the frames it was given). ``set``: changed
    settings (``["models.n_trees=200"]``)."""
    options = {"version": version, "check": check, "set": list(set or []),
               "tracking_uri": _store(tracking_uri),
               "input": _frame_source(data) if data is not None else None}
    result = ReplayResult(_call(_native.replay_run, options))
    if check and not result.identical:
        raise RunnerError(f"replay check failed: {result.replay} does not reproduce {version} bit for bit")
    return result


def predict(version: str, data: Any, *, proba: bool = False,
            tracking_uri: Optional[str] = None):
    """Applies run ``version``'s model to new rows (a DataFrame, or a data file's path) through
    its recorded ETL, as ``runner predict``; a DataFrame with the input row, the decoded label
    (or value) and, with ``proba=True``, each class's probability."""
    path = os.fspath(data) if isinstance(data, (str, os.PathLike)) else _frame_source(data)
    doc = _call(_native.predict, {"version": version, "input": path, "proba": proba,
                                  "tracking_uri": _store(tracking_uri)})
    return _read_csv_text(doc["csv"])


def reload_etl(version: str, *, data: Any = None, tracking_uri: Optional[str] = None):
    """Rebuilds ETL version ``version`` (``"v2"``) from its recorded source, verifies its
    content hash and fingerprint, and returns the table as a DataFrame, as ``runner
    reload-etl``. ``data``: the DataFrame again, for a version built from a frame in another
    process (this process keeps the frames it was given)."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, f"{version}.parquet")
        _call(_native.reload_etl, {"version": version, "out": out, "tracking_uri": _store(tracking_uri),
                                   "input": _frame_source(data) if data is not None else None})
        frame = _read_parquet(out)
        if hasattr(frame, "copy"):
            frame = frame.copy()
        return frame
