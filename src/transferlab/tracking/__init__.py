"""MLflow bookkeeping for stages: one run per stage execution, honest status, nothing in numeric code.

Where the store is and how it fails: `tracking/store.py`. Failing fast, never recording a lie: a server that does not answer stops the stage before
training, with one line; MLflow's HTTP retries and timeouts are bounded (defaults below, the
user's `MLFLOW_HTTP_REQUEST_*` variables win), so a server lost mid-stage fails the stage within
about a minute; a run whose process died (SIGKILL, power loss) is marked KILLED by the next run
of the same stage, never left RUNNING.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
import mlflow  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from transferlab.data import fingerprint, test_set_keys, test_sets  # noqa: E402
from transferlab.errors import StageKilled, TrackingError  # noqa: E402,F401  (StageKilled: re-exported)
from transferlab.launch.cli import raise_killed as _raise_killed  # noqa: E402
from transferlab.tracking.store import (  # the store's names stages and tests use as tracking.<name>
    EXPERIMENT_NOTE as EXPERIMENT_NOTE,
)
from transferlab.tracking.store import (
    HTTP_DEFAULTS as HTTP_DEFAULTS,
)
from transferlab.tracking.store import (
    MAX_PARAM_LENGTH,
    NOTE,
    PROCESS_TAG,
    _store_errors,
    _tracking_failures,
    beside_the_store,
    set_experiment,
    tracking_uri,
)
from transferlab.tracking.store import (
    check_store as check_store,
)


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


def _process_start(pid: int) -> str:
    """The kernel's start time of `pid` (clock ticks since boot), so a reused pid is not mistaken for it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def process_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def _owner_alive(tag: str) -> bool:
    """Is the process named by a PROCESS_TAG still running? Unknown (another host) counts as alive."""
    try:
        host, pid, start = tag.rsplit(":", 2)
        pid_number = int(pid)
    except ValueError:
        return True
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, someone else's
    return start == "?" or _process_start(pid_number) == start


def mark_stale_runs(experiment_id: str, stage: str) -> list[str]:
    """Mark KILLED the RUNNING runs of `stage` whose process is gone (SIGKILL, a crash, power loss)."""
    client = MlflowClient()
    quoted = stage.replace("'", "")
    stale = [
        run.info.run_id
        for run in client.search_runs([experiment_id], f"tags.stage = '{quoted}' and attributes.status = 'RUNNING'", max_results=1000)
        if PROCESS_TAG in run.data.tags and not _owner_alive(run.data.tags[PROCESS_TAG])
    ]
    for run_id in stale:
        client.set_terminated(run_id, "KILLED")
    return stale


def _end(status: str) -> None:
    """End the active run; if the store is gone too, the original error is the one to report."""
    try:
        mlflow.end_run(status)
    except _tracking_failures():
        pass


@contextmanager
def _ended_honestly() -> Iterator[None]:
    """End the active run by what happened inside: FINISHED, KILLED (SIGTERM/SIGINT) or FAILED."""
    try:
        yield
    except (StageKilled, KeyboardInterrupt):
        _end("KILLED")
        raise
    except BaseException:
        _end("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


@contextmanager
def stage_run(experiment: str, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any],
              description: str = "") -> Iterator[dict[str, str]]:
    """Start a run that ends FINISHED, FAILED on an exception, KILLED on SIGTERM/SIGINT; `description`
    is the run's note in the UI (`describe` adds to it once results are known).

    Yields `{"mlflow_run_id": …, "mlflow_experiment_id": …}`, for the stage's metrics file.
    """
    uri = tracking_uri()
    previous = signal.signal(signal.SIGTERM, _raise_killed)
    try:
        with _store_errors(uri):
            experiment_id = set_experiment(experiment)
            if tags.get("stage"):
                mark_stale_runs(experiment_id, tags["stage"])
            run = mlflow.start_run(
                experiment_id=experiment_id, run_name=run_name,
                tags={**context_tags(), **tags, PROCESS_TAG: process_tag(), **({NOTE: description} if description else {})},
            )
            with _ended_honestly():
                log_params(params)
                yield {"mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id}
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def child_run(run_name: str, tags: Mapping[str, str], params: Mapping[str, Any] | None = None) -> Iterator[str]:
    """A nested run (e.g. one seed of a variant) under the active stage run, with the same honest status."""
    parent = mlflow.active_run().info
    run = mlflow.start_run(
        experiment_id=parent.experiment_id, run_name=run_name, nested=True, tags={**tags, PROCESS_TAG: process_tag()}
    )
    with _ended_honestly():
        if params:
            log_params(params)
        yield run.info.run_id


def log_params(params: Mapping[str, Any]) -> None:
    run_id = mlflow.active_run().info.run_id
    items = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in flatten(params).items()]
    for start in range(0, len(items), 100):
        MlflowClient().log_batch(run_id, params=items[start : start + 100])


# A summary value never shares a key with a per-epoch series: the UI would draw it as a point at
# step 0 and show it as the series' "latest" value. Values at the selected epoch get these names;
# any other clash gets FINAL_PREFIX.
SUMMARY_KEYS = {"val_accuracy": "best_val_accuracy", "val_loss": "best_val_loss"}
FINAL_PREFIX = "final_"
# Per-epoch test-set curves are monitoring only (the test set is scored once, on the selected
# weights): their series are labelled so, and the scored value keeps the plain name (`test_accuracy`).
MONITOR_PREFIX = "monitor_"
_series: dict[str, set[str]] = {}  # run id -> the metric keys it holds as per-epoch series


def series_key(key: str) -> str:
    return f"{MONITOR_PREFIX}{key}" if key.startswith("test_") else key


def summary_key(key: str, series: set[str] | frozenset[str] = frozenset()) -> str:
    key = SUMMARY_KEYS.get(key, key)
    return f"{FINAL_PREFIX}{key}" if key in series else key


def log_history(rows: Sequence[Mapping[str, float]], step_key: str = "epoch", prefix: str = "") -> None:
    """Per-epoch metrics with `step=epoch`, so the MLflow UI overlays curves of compared runs."""
    run_id = mlflow.active_run().info.run_id
    timestamp = int(1000 * time.time())
    metrics = [
        Metric(f"{prefix}{series_key(key)}", float(value), timestamp, int(row[step_key]))
        for row in rows
        for key, value in row.items()
        if key not in {step_key, "epoch", "step", "layer"} and isinstance(value, (int, float))
    ]
    _series.setdefault(run_id, set()).update(metric.key for metric in metrics)
    for start in range(0, len(metrics), 1000):
        MlflowClient().log_batch(run_id, metrics=metrics[start : start + 1000])


def log_final(metrics: Mapping[str, Any]) -> None:
    """Final scalar metrics (non-numeric values are skipped), under keys no per-epoch series of the run uses."""
    series = _series.get(mlflow.active_run().info.run_id, set())
    mlflow.log_metrics({summary_key(key, series): float(value) for key, value in metrics.items()
                        if isinstance(value, (int, float)) and not isinstance(value, bool)})


def log_dataset(name: str, source: Path, splits: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
                tags: Mapping[str, Any] | None = None) -> None:
    """Record the data the active run trains and is scored on with MLflow's dataset tracking (the
    runs table's Dataset column): one input per split, its context the split's role (`train`,
    `validation`, `test`), its digest the content hash of the split's arrays, its rows in `tags`."""
    import mlflow.data

    for context, (x, y) in splits.items():
        with warnings.catch_warnings():  # a local path matches MLflow's "" and "file" sources, the same class
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
            dataset = mlflow.data.from_numpy(x, source=str(source), targets=y, name=name, digest=fingerprint(x) if y is None else fingerprint(x, y))
        mlflow.log_input(dataset, context=context, tags={"rows": str(len(x)), **{k: str(v) for k, v in (tags or {}).items()}})


def log_target(name: str, source: Path, arrays: Mapping[str, np.ndarray], tags: Mapping[str, Any]) -> None:
    """A prepared target's inputs: its pool (context `train`: every repetition draws its labelled
    training and validation images from it, sizes in `tags`), its test set (context `test`) and each further
    test set `<set>` (`x_test_<set>`, `y_test_<set>`: context `test_<set>`), in the file's order."""
    splits = {"train": (arrays["x_pool"], arrays["y_pool"]), "test": (arrays["x_test"], arrays["y_test"])}
    for test_set in test_sets(arrays):
        x_key, y_key = test_set_keys(test_set)
        splits[f"test_{test_set}"] = (arrays[x_key], arrays[y_key])
    log_dataset(name, source, splits, tags)


def describe(text: str) -> None:
    """Set the active run's description (its note in the UI)."""
    mlflow.set_tag(NOTE, text)


def log_files(paths: Sequence[Path] | Mapping[str, Path], artifact_path: str | None = None) -> None:
    """Log files as artifacts; a mapping names them (`{"history.csv": plots/transfer/freeze2.csv}`), so
    every run of a kind holds the same artifact names and MLflow's compare view can compare them."""
    named = paths.items() if isinstance(paths, Mapping) else ((Path(path).name, path) for path in paths)
    files = [(name, Path(path).resolve()) for name, path in named]  # the block below may change the working directory
    with tempfile.TemporaryDirectory() as tmp, beside_the_store():
        for name, path in files:
            if path.name != name:
                path = shutil.copyfile(path, Path(tmp) / name)
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
