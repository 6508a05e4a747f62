"""MLflow bookkeeping for stages: one run per stage execution, honest status, nothing in numeric code.

The store defaults to the SQLite file `mlflow.db` at the repository root (stated explicitly, so
it does not depend on MLflow's changing defaults); `MLFLOW_TRACKING_URI` points the same
pipeline at a shared server instead.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

DEFAULT_STORE = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
MAX_PARAM_LENGTH = 6000


class StageKilled(BaseException):
    """Raised in the stage process on SIGTERM, so the run is ended as KILLED, not left RUNNING."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def _uses_default_store() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI")


def set_experiment(name: str) -> str:
    """Point MLflow at the store and experiment; a new local experiment keeps artifacts in `mlartifacts/`."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = Path(DEFAULT_ARTIFACTS).resolve().as_uri() if _uses_default_store() else None
        return client.create_experiment(name, artifact_location=location)
    return experiment.experiment_id


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay whole (`[300, 50]`), as MLflow params are strings anyway."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def context_tags() -> dict[str, str]:
    """Tags every run gets: the git commit, and the DVC experiment name under `dvc exp run`."""
    tags = {"git_commit": git_commit()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    return tags


def _raise_killed(signum: int, _frame: Any) -> None:
    raise StageKilled(signal.Signals(signum).name)


@contextmanager
def _ended_honestly() -> Iterator[None]:
    """End the active run by what happened inside: FINISHED, KILLED (SIGTERM/SIGINT) or FAILED."""
    try:
        yield
    except (StageKilled, KeyboardInterrupt):
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


@contextmanager
def stage_run(experiment: str, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> Iterator[dict[str, str]]:
    """Start a run that ends FINISHED, FAILED on an exception, KILLED on SIGTERM/SIGINT.

    Yields `{"mlflow_run_id": …, "mlflow_experiment_id": …}`, for the stage's metrics file.
    """
    experiment_id = set_experiment(experiment)
    previous = signal.signal(signal.SIGTERM, _raise_killed)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags={**context_tags(), **tags})
    try:
        with _ended_honestly():
            log_params(params)
            yield {"mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id}
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def child_run(run_name: str, tags: Mapping[str, str], params: Mapping[str, Any] | None = None) -> Iterator[str]:
    """A nested run (e.g. one seed of a variant) under the active stage run, with the same honest status."""
    parent = mlflow.active_run().info
    run = mlflow.start_run(experiment_id=parent.experiment_id, run_name=run_name, nested=True, tags=dict(tags))
    with _ended_honestly():
        if params:
            log_params(params)
        yield run.info.run_id


def log_params(params: Mapping[str, Any]) -> None:
    run_id = mlflow.active_run().info.run_id
    items = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in flatten(params).items()]
    for start in range(0, len(items), 100):
        MlflowClient().log_batch(run_id, params=items[start : start + 100])


def log_history(rows: Sequence[Mapping[str, float]], step_key: str = "epoch", prefix: str = "") -> None:
    """Per-epoch metrics with `step=epoch`, so the MLflow UI overlays curves of compared runs."""
    run_id = mlflow.active_run().info.run_id
    timestamp = int(1000 * time.time())
    metrics = [
        Metric(f"{prefix}{key}", float(value), timestamp, int(row[step_key]))
        for row in rows
        for key, value in row.items()
        if key not in {step_key, "epoch", "step", "layer"} and isinstance(value, (int, float))
    ]
    for start in range(0, len(metrics), 1000):
        MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def log_final(metrics: Mapping[str, Any]) -> None:
    """Final scalar metrics (non-numeric values are skipped)."""
    mlflow.log_metrics({key: float(value) for key, value in metrics.items() if isinstance(value, (int, float)) and not isinstance(value, bool)})


def register_model(path: Path, name: str, tags: Mapping[str, Any]) -> str:
    """Register a stage's `.keras` output in the MLflow Model Registry (the zoo); returns the new version."""
    from transferlab.zoo_registry import register_keras

    return register_keras(path, name, {key: str(value) for key, value in tags.items()})


def log_files(paths: Sequence[Path], artifact_path: str | None = None) -> None:
    for path in paths:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
