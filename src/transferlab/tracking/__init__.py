"""MLflow bookkeeping for stages: one run per stage execution, honest status, nothing in numeric code.

The store defaults to the SQLite file `mlflow.db` at the repository root (stated explicitly, so
it does not depend on MLflow's changing defaults); `MLFLOW_TRACKING_URI` points the same
pipeline at a shared server instead.

Failing fast, never recording a lie: a server that does not answer stops the stage before
training, with one line; MLflow's HTTP retries and timeouts are bounded (defaults below, the
user's `MLFLOW_HTTP_REQUEST_*` variables win), so a server lost mid-stage fails the stage within
about a minute; a run whose process died (SIGKILL, power loss) is marked KILLED by the next run
of the same stage, never left RUNNING.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# MLflow's own defaults retry a dead server for about four minutes (7 retries, 120 s timeout).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
for _name, _value in HTTP_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from transferlab.data import fingerprint  # noqa: E402
from transferlab.errors import StageKilled, TrackingError  # noqa: E402,F401  (StageKilled: re-exported)
from transferlab.errors import first_line as _first_line  # noqa: E402  (messages never carry a secret)
from transferlab.errors import scrub as _shown
from transferlab.launch.cli import raise_killed as _raise_killed  # noqa: E402

DEFAULT_STORE = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
MAX_PARAM_LENGTH = 6000
REACH_TIMEOUT_S = 5
PROCESS_TAG = "transferlab.process"  # host:pid:start time of the process that owns a RUNNING run
# MLflow 3's UI opens an experiment by its kind; without the tag it guesses and shows the GenAI
# overview (traces, tokens). These are model-training runs: open on the runs table.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
NOTE = "mlflow.note.content"  # the description the UI shows above a run or an experiment (Markdown)
EXPERIMENT_NOTE = (
    "transferlab: which way of reusing a pretrained network works best on a small target task, and what it costs. "
    "One parent run per DVC stage: `pretrain_source@…` and `pretrain@…` make the models variants start from "
    "(registered in the Models tab), `transfer@<variant>` races one variant (its nested runs: one per repetition), "
    "`sweep_…` runs a sweep (nested: one per point), `report` holds the comparison. "
    "Per-epoch series are `val_accuracy`, `val_loss`, …; summaries have their own keys "
    "(`target_accuracy`, `best_val_accuracy`, `test_accuracy`)."
)


def default_uri() -> str:
    return f"sqlite:///{Path(DEFAULT_STORE).resolve()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def _tls_context(scheme: str) -> ssl.SSLContext | None:
    """Verify the server as MLflow's client will (its insecure-TLS and CA-bundle variables)."""
    if scheme != "https":
        return None
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # noqa: S323  (the user asked MLflow for exactly this)
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


def check_store(uri: str) -> None:
    """Fail in seconds, with one line, when the store cannot be used: an HTTP(S) server that does
    not answer, or a SQLite file that cannot be written."""
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        netloc = parts.netloc.rpartition("@")[2]  # urllib cannot send user:password@; /health needs no login
        probe = urllib.parse.urlunsplit(parts._replace(netloc=netloc, path=parts.path.rstrip("/") + "/health", query=""))
        try:
            with urllib.request.urlopen(probe, timeout=REACH_TIMEOUT_S, context=_tls_context(scheme)):
                pass
        except urllib.error.HTTPError:
            pass  # it answered (an auth proxy, an older server without /health): reachable
        except (OSError, ValueError) as error:  # URLError, refused, timeout, bad port
            reason = _first_line(getattr(error, "reason", None) or error)
            raise TrackingError(
                f"MLflow tracking server {_shown(uri)} is not reachable ({reason}): start it or unset MLFLOW_TRACKING_URI"
            ) from None
    elif scheme == "sqlite" and uri.startswith("sqlite:///") and "?" not in uri:
        path = Path(uri[len("sqlite:///"):])
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise TrackingError(f"MLflow store {path} is read-only: make it writable or set MLFLOW_TRACKING_URI")
        folder = next(p for p in path.parents if p.exists())  # MLflow creates the missing folders below it
        if not path.exists() and not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow store {path} cannot be created ({folder} is read-only): set MLFLOW_TRACKING_URI")


def _tracking_failures() -> tuple[type[BaseException], ...]:
    """What MLflow raises when its store fails: its own exception, the HTTP client's, the database's."""
    failures: list[type[BaseException]] = [MlflowException]
    try:
        import requests

        failures.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    try:
        import sqlalchemy.exc

        failures.append(sqlalchemy.exc.SQLAlchemyError)
    except ImportError:
        pass
    failures.append(sqlite3.Error)
    return tuple(failures)


@contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """A failing store becomes one line naming it, not a traceback from deep inside MLflow."""
    try:
        yield
    except _tracking_failures() as error:
        raise TrackingError(f"MLflow store {_shown(uri)} failed ({_first_line(error)}); nothing was recorded as done") from None


def _relative_artifacts(store: Path, experiment_id: str) -> None:
    """Store `mlartifacts/<id>` as the experiment's artifact location, relative to the repository.

    MLflow makes any location it is given absolute (`resolve_uri_if_local`), so a copy of the
    repository (a colleague's clone) would write back into this one. A relative location resolves
    against the working directory, the repository root for stages; a run started elsewhere (a
    `dvc exp` temp workspace) is pinned beside the store by `_anchor_artifacts`.
    """
    with sqlite3.connect(store) as db:
        db.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
            (f"{DEFAULT_ARTIFACTS}/{experiment_id}", int(experiment_id)),
        )
    db.close()


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite store (None for a server or another database)."""
    if not uri.startswith("sqlite:///") or "?" in uri:
        return None
    return Path(uri[len("sqlite:///"):]).resolve()


def _anchor_artifacts(run_id: str) -> None:
    """Keep a run's artifacts beside its store when the run starts outside the store's folder.

    A relative location (`_relative_artifacts`) resolves against the working directory: for a
    `dvc exp run --queue` experiment that is a temporary copy of the repository, which DVC deletes
    with the run's models and histories in it. Such a run gets the absolute location under the
    store's folder, where `make ui` and `models:/` find it.
    """
    store = _sqlite_file(tracking_uri())
    if store is None or store.parent == Path.cwd().resolve():
        return
    with sqlite3.connect(store) as db:
        row = db.execute("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        if row and row[0] and "://" not in row[0] and not row[0].startswith("/"):
            db.execute("UPDATE runs SET artifact_uri = ? WHERE run_uuid = ?", (str(store.parent / row[0]), run_id))
    db.close()


@contextmanager
def beside_the_store() -> Iterator[None]:
    """Write what is logged in this block where the store's relative artifact locations point: its folder.

    An MLflow model (MLflow 3's logged model) takes its location from the experiment's, relative to the
    working directory, and its files are written as it is created, so `_anchor_artifacts` cannot move it
    afterwards. A stage run in a temporary copy of the repository (`dvc exp run --queue`) would write it
    into that copy, which DVC deletes; in this block the working directory is the store's folder instead.
    """
    store = _sqlite_file(tracking_uri())
    here = Path.cwd()
    if store is None or store.parent == here.resolve():
        yield
        return
    os.chdir(store.parent)
    try:
        yield
    finally:
        os.chdir(here)


@contextmanager
def _one_at_a_time(uri: str) -> Iterator[None]:
    """Serialize opening a local SQLite store across processes: MLflow creates and migrates its tables on
    first use, and two stages doing that at once (queued experiments on a fresh store) collide
    ("duplicate column name", "table _alembic_tmp_… already exists"). A lock on the store's folder,
    so no lock file is left behind."""
    store = _sqlite_file(uri)
    if store is None or not store.parent.is_dir():
        yield
        return
    folder = os.open(store.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


def set_experiment(name: str) -> str:
    """Point MLflow at the store and experiment; a new local experiment keeps artifacts in `mlartifacts/`."""
    uri = tracking_uri()
    check_store(uri)
    with _store_errors(uri), _one_at_a_time(uri):
        mlflow.set_tracking_uri(uri)
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            experiment_id = client.create_experiment(name, tags=dict([EXPERIMENT_KIND, (NOTE, EXPERIMENT_NOTE)]))
            store = _sqlite_file(uri)
            if store is not None and store.name == DEFAULT_STORE:  # a repository's store, wherever the stage runs
                _relative_artifacts(store, experiment_id)
            return experiment_id
        for key, value in (EXPERIMENT_KIND, (NOTE, EXPERIMENT_NOTE)):  # a store made before the tag: never overrides the user's
            if key not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, key, value)
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
            _anchor_artifacts(run.info.run_id)
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
    _anchor_artifacts(run.info.run_id)
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
    training and validation images from it, sizes in `tags`), its test set (context `test`) and,
    when it has one, its shifted test set (context `test_shift`)."""
    splits = {"train": (arrays["x_pool"], arrays["y_pool"]), "test": (arrays["x_test"], arrays["y_test"])}
    if "x_test_shift" in arrays:
        splits["test_shift"] = (arrays["x_test_shift"], arrays["y_test_shift"])
    log_dataset(name, source, splits, tags)


def describe(text: str) -> None:
    """Set the active run's description (its note in the UI)."""
    mlflow.set_tag(NOTE, text)


def log_files(paths: Sequence[Path] | Mapping[str, Path], artifact_path: str | None = None) -> None:
    """Log files as artifacts; a mapping names them (`{"history.csv": plots/transfer/freeze2.csv}`), so
    every run of a kind holds the same artifact names and MLflow's compare view can compare them."""
    named = paths.items() if isinstance(paths, Mapping) else ((Path(path).name, path) for path in paths)
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in named:
            if Path(path).name != name:
                path = shutil.copyfile(path, Path(tmp) / name)
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
