"""Runs in MLflow: every job that trains or evaluates (pretrain, transfer, benchmark, evaluate;
tune through Ray Tune's MLflow callback) records its parameters, per-epoch curves, metrics,
reports and plots as an MLflow run, and the registry (``registry.py``) keeps models in the same
store.

Where (``store_uri``): ``$MLFLOW_TRACKING_URI`` for a team's server, else a local folder,
``./registry`` by default, holding an SQLite store (``mlflow.db``) and the artifacts
(``artifacts/``): nothing to start, and ``mlflow ui --backend-store-uri
sqlite:///registry/mlflow.db`` reads it (MLflow 3 refuses new file stores, ``./mlruns``). Runs
are written through ``MlflowClient`` with an explicit URI (no process-wide MLflow state); a run
opened inside another becomes its child.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable

DEFAULT_FOLDER = "registry"
DB = "mlflow.db"
SERVER_SCHEMES = ("http", "https", "databricks", "postgresql", "mysql", "mssql")
MAX_PARAM = 500  # characters of a parameter's value (MLflow takes 6,000; longer ones are noise in the UI)
_OPEN: list["Run"] = []  # the runs open in this process, innermost last


def store_uri(root: str | None = None) -> str:
    """The MLflow tracking (and registry) URI of ``root``: a tracking URI as it is, a local folder
    as ``sqlite:///<folder>/mlflow.db``; None: ``$MLFLOW_TRACKING_URI``, else ``./registry``."""
    root = str(root or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_FOLDER)
    scheme = root.split(":", 1)[0] if ":" in root else ""
    if root == "databricks" or scheme in SERVER_SCHEMES or scheme in ("file", "sqlite"):
        return root
    if "://" in root:
        raise ValueError(f"{root}: not an MLflow store; give a tracking URI (http(s)://, sqlite:///, databricks) "
                         "or a local folder")
    folder = Path(root).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / DB}"


def local_folder(root: str | None = None) -> str | None:
    """The local folder that holds the store (``<folder>/mlflow.db``), None for a server."""
    uri = store_uri(root)
    if uri.startswith("sqlite:///") and uri.endswith(f"/{DB}"):
        return str(Path(uri.removeprefix("sqlite:///")).parent)
    return None


@functools.lru_cache(maxsize=8)
def _client(uri: str):
    # MLflow's own console handler would print its notes (database set-up, ...) under a job's
    # progress; without it they go where the job's other library logs go (its log file).
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def client(root: str | None = None):
    return _client(store_uri(root))


def experiment_id(name: str, root: str | None = None) -> str:
    """The experiment's id, created if new; in a local store its artifacts go to
    ``<folder>/artifacts/<name>`` (beside the database, not the working directory)."""
    from mlflow.exceptions import MlflowException

    found = client(root).get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    folder = local_folder(root)
    where = None if folder is None else Path(folder, "artifacts", name).as_uri()
    try:
        return client(root).create_experiment(name, artifact_location=where)
    except MlflowException:  # created by another process since
        return client(root).get_experiment_by_name(name).experiment_id


def mlflow_key(name: str) -> str:
    """A parameter or metric name as MLflow takes it (letters, digits, ``_-./: `` and spaces):
    ``@`` becomes ``_at_``, anything else outside the set ``_``."""
    return re.sub(r"[^\w./: -]", "_", name.replace("@", "_at_"))[:250]


def flat_params(params: dict | None, prefix: str = "") -> dict[str, str]:
    """Nested config values as MLflow parameters: dotted keys, text values."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[mlflow_key(name)] = text if len(text) <= MAX_PARAM else text[:MAX_PARAM - 3] + "..."
    return out


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested result (``{"value": x}`` leaves become ``x``), dotted keys
    (``mlflow_key``)."""
    out: dict[str, float] = {}
    for part, value in metrics.items():
        name = f"{prefix}{part}"
        if isinstance(value, dict):
            if "value" in value and isinstance(value["value"], (int, float)):
                value = value["value"]
            else:
                out.update(flat_metrics(value, f"{name}."))
                continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[mlflow_key(name)] = float(value)
    return out


class Run:
    """An MLflow run: ``with Run(experiment, name, params=...) as run: run.log_metrics(...)``.
    It ends FINISHED, or FAILED (KILLED on Ctrl+C) when its block raises."""

    def __init__(self, experiment: str, name: str, root: str | None = None, params: dict | None = None,
                 tags: dict[str, str] | None = None):
        # A run opened inside another (a benchmark's stages, a search's evaluation) goes where it does.
        inner = root is None and _OPEN
        self.experiment, self.name = experiment, name
        self.uri = _OPEN[-1].uri if inner else store_uri(root)
        self.params, self.tags = params, dict(tags or {})
        self.id: str | None = None
        self.artifact_uri: str | None = None

    @property
    def client(self):
        return _client(self.uri)

    def __enter__(self) -> "Run":
        from mlflow.entities import Param

        tags = dict(self.tags)
        parent = next((r for r in reversed(_OPEN) if r.uri == self.uri), None)
        if parent is not None:
            tags["mlflow.parentRunId"] = parent.id
        run = self.client.create_run(experiment_id(self.experiment, self.uri), run_name=self.name, tags=tags)
        self.id, self.artifact_uri = run.info.run_id, run.info.artifact_uri
        try:
            params = [Param(k, v) for k, v in flat_params(self.params).items()]
            for start in range(0, len(params), 100):  # MLflow's batch limit
                self.client.log_batch(self.id, params=params[start:start + 100])
        except BaseException:
            self.client.set_terminated(self.id, "FAILED")
            raise
        _OPEN.append(self)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        _OPEN.remove(self)
        status = "FINISHED" if kind is None else "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED"
        self.client.set_terminated(self.id, status)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, v, now, step) for k, v in flat_metrics(metrics).items()]
        for start in range(0, len(rows), 1000):
            self.client.log_batch(self.id, metrics=rows[start:start + 1000])

    def log_history(self, history: Iterable[dict], step_key: str = "epoch") -> None:
        """Per-epoch curves: each entry's numbers at step ``entry[step_key]``."""
        for i, entry in enumerate(history):
            step = int(entry.get(step_key, i))
            self.log_metrics({k: v for k, v in entry.items() if k != step_key}, step=step)

    def log_artifacts(self, local: str | Path, path: str | None = None) -> None:
        """A file or a folder's files, under ``path`` in the run's artifacts."""
        local = Path(local)
        if local.is_dir():
            self.client.log_artifacts(self.id, str(local), path)
        elif local.is_file():
            self.client.log_artifact(self.id, str(local), path)


def log_report(run: Run, folder: str | None, path: str = "evaluation") -> None:
    """An evaluation's files (``metrics.json``, ``report.md``, plots) as the run's artifacts."""
    if folder and Path(folder).is_dir():
        for f in sorted(Path(folder).iterdir()):
            if f.suffix in (".json", ".md", ".png") and f.is_file():
                run.log_artifacts(f, path)


def job_name(cfg, fallback: str) -> str:
    """A run's name: the job's ``run.name``, else the folder its results go to."""
    run = getattr(cfg, "run", None)
    if run is not None and getattr(run, "name", None):
        return run.name
    out = getattr(cfg, "out_dir", None)
    return Path(out).name if out else fallback


def training_run(job: str, cfg, train) -> dict:
    """``train()`` (a training job's run: ``{"best", "history", "export_dir"}``) as an MLflow run of
    experiment ``job``: the config, the validation curves by epoch, the best epoch's metrics and
    the exported model's ``config.json``."""
    with Run(job, job_name(cfg, job), params=cfg.to_public_dict(), tags={"interest.job": job}) as run:
        out = train()
        run.log_history(out.get("history") or [])
        run.log_metrics({f"best.{k}": v for k, v in (out.get("best") or {}).items()})
        export = out.get("export_dir")
        if export and Path(export, "config.json").is_file():
            run.log_artifacts(Path(export, "config.json"), "model")
    return out


def evaluation_run(job: str, cfg, evaluate) -> dict:
    """``evaluate()`` (``{"results", "paths"}``) as an MLflow run: the config, every model's and
    baseline's metrics by segment, and the report's files."""
    with Run(job, job_name(cfg, job), params=cfg.to_public_dict(), tags={"interest.job": job}) as run:
        out = evaluate()
        run.log_metrics(out.get("results") or {})
        report = (out.get("paths") or {}).get("report")
        log_report(run, str(Path(report).parent) if report else None)
    return out
