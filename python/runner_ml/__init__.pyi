"""Type stubs of runner_ml: runner's sweeps, runs, replays and predictions from Python."""

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__version__: str

ConfigLike = Union[str, os.PathLike, Mapping[str, Any]]
DataFrame = Any  # a pandas DataFrame when pandas is installed, else a polars one

class RunnerError(RuntimeError): ...

class ConfigError(RunnerError, ValueError):
    message: str
    key: Optional[str]
    file: Optional[str]
    line: Optional[int]
    def __init__(self, text: str, *, message: str = ..., key: Optional[str] = ...,
                 file: Optional[str] = ..., line: Optional[int] = ...) -> None: ...

class Run:
    doc: Dict[str, Any]
    version: str
    name: str
    kind: str
    status: str
    error: Optional[str]
    run_uuid: str
    pruned: Optional[Dict[str, Any]]
    metrics: Dict[str, Tuple[float, float]]
    fold_metrics: Dict[str, List[float]]
    holdout: Dict[str, float]
    fit_seconds: float
    artifact_dir: Optional[str]
    @property
    def artifacts(self) -> List[str]: ...
    def fold_table(self) -> DataFrame: ...
    def per_class(self) -> DataFrame: ...

class SweepResult:
    report: Dict[str, Any]
    status_line: str
    failed: bool
    runs: List[Run]
    primary_metric: str
    higher_is_better: bool
    etl_version: str
    store: str
    task: str
    sweep: Optional[Dict[str, Any]]
    def ranked(self) -> List[Run]: ...
    @property
    def best(self) -> Optional[Run]: ...
    @property
    def leaderboard(self) -> DataFrame: ...
    def run(self, version: str) -> Run: ...
    def _repr_html_(self) -> str: ...

class ReplayResult:
    doc: Dict[str, Any]
    original: str
    replay: str
    status: str
    identical: bool
    changes: List[str]
    run: Run
    @property
    def metrics(self) -> DataFrame: ...

class EdaResult:
    run_uuid: str
    etl_version: str
    report: Dict[str, Any]
    markdown: str
    plots: Dict[str, str]
    store: str
    def _repr_markdown_(self) -> str: ...

def eda(config: ConfigLike, *, data: Any = ..., set: Optional[Sequence[str]] = ...,
        tracking_uri: Optional[str] = ...) -> EdaResult: ...
def sweep(config: ConfigLike, *, data: Any = ..., sweeps: Optional[Sequence[Mapping[str, Any]]] = ...,
          set: Optional[Sequence[str]] = ..., only: Optional[Sequence[str]] = ...,
          jobs: Optional[int] = ..., tracking_uri: Optional[str] = ..., restart: bool = ...,
          smoke: bool = ..., verbose: bool = ...) -> SweepResult: ...
def runs(*, experiment: Optional[str] = ..., status: Optional[str] = ..., sort: Optional[str] = ...,
         limit: Optional[int] = ..., tracking_uri: Optional[str] = ...) -> DataFrame: ...
def models() -> DataFrame: ...
def replay(version: str, *, data: Any = ..., check: bool = ..., set: Optional[Sequence[str]] = ...,
           tracking_uri: Optional[str] = ...) -> ReplayResult: ...
def predict(version: str, data: Any, *, proba: bool = ..., tracking_uri: Optional[str] = ...) -> DataFrame: ...
def reload_etl(version: str, *, data: Any = ..., tracking_uri: Optional[str] = ...) -> DataFrame: ...
