"""The MLflow store: where it is, whether it answers, one line when it fails, artifacts kept beside it.

The store defaults to the SQLite file `mlflow.db` at the repository root; `MLFLOW_TRACKING_URI`
points the pipeline at a shared server instead. HTTP retries and timeouts are bounded (defaults
below, the user's `MLFLOW_HTTP_REQUEST_*` variables win). MLflow is used through its API only,
never by writing into its tables.
"""
from __future__ import annotations

import fcntl
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from transferlab.errors import TrackingError  # noqa: E402
from transferlab.errors import first_line as _first_line  # noqa: E402  (messages never carry a secret)
from transferlab.errors import scrub as _shown  # noqa: E402

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
    """What MLflow raises when its store fails: its own exception, the HTTP client's, the database's
    (SQLAlchemy wraps the SQLite driver's errors)."""
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
    return tuple(failures)


@contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """A failing store becomes one line naming it, not a traceback from deep inside MLflow."""
    try:
        yield
    except _tracking_failures() as error:
        raise TrackingError(f"MLflow store {_shown(uri)} failed ({_first_line(error)}); nothing was recorded as done") from None


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite store (None for a server or another database)."""
    if not uri.startswith("sqlite:///") or "?" in uri:
        return None
    return Path(uri[len("sqlite:///"):]).resolve()


def _artifact_root(uri: str) -> Path | None:
    """Where a repository's store (a local `mlflow.db`) keeps its experiments' artifacts: `mlartifacts/`
    beside it, wherever the stage runs (None: another store, MLflow's defaults).

    The location is absolute: MLflow makes any local location it is given absolute
    (`resolve_uri_if_local`) and its API cannot change an experiment's location afterwards. Being the
    store's folder, not the working directory, it keeps a queued experiment's artifacts (`dvc exp run
    --queue` runs in a temporary copy of the repository, which DVC deletes) beside the store.
    """
    store = _sqlite_file(uri)
    return store.parent / DEFAULT_ARTIFACTS if store is not None and store.name == DEFAULT_STORE else None


def _local_path(location: str) -> Path | None:
    """The folder of a local artifact location (`/…` or `file:///…`); None for a remote or relative one."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme not in ("", "file") or parts.netloc not in ("", "localhost"):
        return None
    path = Path(urllib.parse.unquote(parts.path))
    return path if path.is_absolute() else None


def _note_other_folder(uri: str, name: str, location: str) -> None:
    """Say so when a repository's store was copied or moved: its experiment writes into the other folder.

    A store made in folder X keeps artifacts in `X/mlartifacts` (`_artifact_root`), an absolute path, and
    MLflow's API cannot point an experiment elsewhere: a copy of the repository with its `mlflow.db`
    (`cp -r`, another mount point) writes its runs' files into X's, the original's. A location of the
    user's own (not `…/mlartifacts`), a remote one, or a relative one (made by earlier versions of this
    code, it resolves against the working directory) is not noted.
    """
    root, path = _artifact_root(uri), _local_path(location)
    if root is None or path is None or path.name != DEFAULT_ARTIFACTS or path == root:
        return
    print(f"note: MLflow store {root.parent / DEFAULT_STORE} was made in {path.parent}: its experiment '{name}' keeps "
          f"artifacts in {path}, and this copy's runs write theirs there too; move {DEFAULT_STORE} aside for a "
          f"store of this copy's own", file=sys.stderr)


def _relative(location: str) -> bool:
    """An artifact location stored relative (by earlier versions of this code): it resolves against the
    working directory when MLflow writes or reads there."""
    return bool(location) and not urllib.parse.urlsplit(location).scheme and not location.startswith("/")


@contextmanager
def beside_the_store() -> Iterator[None]:
    """Write what is logged in this block where a relative artifact location means it: the store's folder.

    Experiments made by earlier versions of this code keep the relative location `mlartifacts/<id>`,
    which MLflow resolves against the working directory as it writes. A stage run in a temporary copy of
    the repository (`dvc exp run --queue`) would write into that copy, which DVC deletes; in this block
    the working directory is the store's folder instead. Runs of experiments made now have absolute
    locations (`_artifact_root`): nothing changes for them.
    """
    store = _sqlite_file(tracking_uri())
    run = mlflow.active_run()
    here = Path.cwd()
    absolute = run is not None and not _relative(run.info.artifact_uri)
    if store is None or absolute or store.parent == here.resolve():
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
    """Point MLflow at the store and experiment; a new experiment in a repository's store keeps artifacts in
    `mlartifacts/` beside it (`_artifact_root`)."""
    uri = tracking_uri()
    check_store(uri)
    with _store_errors(uri), _one_at_a_time(uri):
        mlflow.set_tracking_uri(uri)
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            root = _artifact_root(uri)
            return client.create_experiment(name, artifact_location=None if root is None else str(root),
                                            tags=dict([EXPERIMENT_KIND, (NOTE, EXPERIMENT_NOTE)]))
        _note_other_folder(uri, name, experiment.artifact_location)
        for key, value in (EXPERIMENT_KIND, (NOTE, EXPERIMENT_NOTE)):  # a store made before the tag: never overrides the user's
            if key not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
