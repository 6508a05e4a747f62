"""Shared tracking on PostgreSQL: a real cluster and `mlflow server` (transferlab.tools.server), real stages through DVC.

Starts PostgreSQL (Debian's package; `.ci/run` installs it when missing) and MLflow on free
loopback ports in a temp folder, runs the tiny pipeline's stages against the server through
MLFLOW_TRACKING_URI, reads back through MlflowClient and straight from PostgreSQL, then stops
the server and checks that a stage fails fast, with one line naming the URI, recording nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest
from conftest import address, make_project, stage_env, tiny_params
from mlflow.tracking import MlflowClient

from transferlab.tools import server

DVC = [sys.executable, "-m", "dvc"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _params() -> dict:
    """Tiny params plus an import of the registered source model and a variant trained from it."""
    params = tiny_params()
    params["zoo"] = {"registered_source": {"kind": "registry", "uri": "models:/transferlab-source/latest"}}
    params["variants"]["registry_freeze2"] = {**params["variants"]["freeze2"], "init_from": "registered_source"}
    return params


def _dvc(project: Path, uri: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {**stage_env(project), **({"MLFLOW_TRACKING_URI": uri} if uri else {})}
    return subprocess.run([*DVC, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600)


def _checked(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def layout() -> Iterator[server.Layout]:
    """A server folder the `postgres` user can reach (pytest's own temp folders are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="transferlab-server-"))
    root.chmod(0o755)
    try:
        yield server.Layout(root / "server")
    finally:
        server.stop(server.Layout(root / "server"))
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_stages_track_to_mlflow_on_postgresql(tmp_path: Path, layout: server.Layout) -> None:
    project = make_project(tmp_path / "project", _params())
    port, pg_port = _free_port(), _free_port()
    with ThreadPoolExecutor(1) as pool:  # the server starts (~30 s: a new schema) while the stages without tracking run
        started = pool.submit(server.start, layout, port, pg_port)
        _checked(_dvc(project, None, "repro", address("prepare_source"), address("prepare_target@mnist")))
        uri = started.result()
    assert uri == f"http://127.0.0.1:{port}"
    with pytest.raises(server.ServerError, match=r"^a server is already running from .*: stop it first \(make server-stop\)$"):
        server.start(layout, port, pg_port)
    out = _checked(_dvc(project, uri, "repro", address("transfer@registry_freeze2")))
    assert f"Running stage '{address('zoo@registered_source')}'" in out and f"Running stage '{address('pretrain_source@source')}'" in out

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tests")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # artifacts go through the server
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert all(r.info.status == "FINISHED" for r in runs)
    parents = {r.data.tags["stage"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {"pretrain_source@source", "zoo@registered_source", "transfer@registry_freeze2"}

    # the variant's run: its id in the run record, one nested run per repetition, per-epoch curves, its model
    metrics = json.loads((project / "metrics/transfer/registry_freeze2.json").read_text())
    transfer = parents["transfer@registry_freeze2"]
    assert json.loads((project / "runs/transfer/registry_freeze2.json").read_text())["mlflow_run_id"] == transfer.info.run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == transfer.info.run_id]
    assert len(children) == len(metrics["repetitions"]) == _params()["transfer"]["seeds"]
    assert children[0].data.params["stop_reason"] == metrics["repetitions"][0]["stop_reason"]
    epochs_run = max(r["epochs_run"] for r in metrics["repetitions"])
    curve = sorted(m.step for m in client.get_metric_history(transfer.info.run_id, "val_accuracy"))
    assert curve == list(range(1, epochs_run + 1))
    assert {a.path for a in client.list_artifacts(transfer.info.run_id)} == {"model.keras", "history.csv"}
    fetched = Path(client.download_artifacts(transfer.info.run_id, "model.keras", str(tmp_path)))
    assert _sha256(fetched) == _sha256(project / "models/transfer/registry_freeze2.keras")
    assert list(layout.artifacts.rglob("model.keras")), "the artifact store is the server's folder"

    # the registry: the source stage registered version 1, which zoo@registered_source imported through the server
    source = json.loads((project / "metrics/source.json").read_text())
    record = json.loads((project / "runs/source.json").read_text())
    versions = client.search_model_versions("name = 'transferlab-source'")
    assert [(v.version, v.run_id) for v in versions] == [("1", record["mlflow_run_id"])]
    imported = json.loads((project / "metrics/registered_source.json").read_text())
    assert imported["source_test_accuracy"] == source["test_accuracy"]
    assert json.loads((project / "runs/registered_source.json").read_text())["sha256"] == _sha256(project / "models/source.keras")

    # and all of it is in PostgreSQL, not in a file next to the server
    with psycopg2.connect(host="127.0.0.1", port=pg_port, user=server.DB_USER, dbname=server.DATABASE) as db, db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment.experiment_id),))
        assert cursor.fetchone()[0] == len(runs)
        cursor.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'val_accuracy'", (transfer.info.run_id,))
        assert cursor.fetchone()[0] >= epochs_run
        cursor.execute("SELECT name FROM registered_models")
        assert cursor.fetchall() == [("transferlab-source",)]
    db.close()

    # the server goes down: the next stage fails in seconds with one line naming the URI, and DVC records nothing
    assert server.stop(layout) == ["mlflow server", "PostgreSQL"]
    lock = (project / "inputs" / "dvc.lock").read_bytes()
    begun = time.monotonic()
    result = _dvc(project, uri, "repro", "-f", "-s", address("zoo@registered_source"))
    assert time.monotonic() - begun < 30
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: MLflow tracking server {uri} is not reachable (") and errors[0].endswith("unset MLFLOW_TRACKING_URI")
    assert "Traceback" not in result.stderr
    assert (project / "inputs" / "dvc.lock").read_bytes() == lock
    assert address("zoo@registered_source") in json.loads(_checked(_dvc(project, uri, "status", "--json")))


def test_missing_postgres_binary_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(server.glob, "glob", lambda pattern: [])
    with pytest.raises(server.ServerError, match=r"^PostgreSQL's initdb not found: install Debian's postgresql package"):
        server.postgres_binary("initdb")


def test_make_server_and_stop(tmp_path: Path) -> None:
    """`make server` / `make server-stop` are the documented commands: they drive the same module."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "python -m transferlab.tools.server start" in makefile and "python -m transferlab.tools.server stop" in makefile
    result = subprocess.run([sys.executable, "-m", "transferlab.tools.server", "stop", "--dir", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60, env={**os.environ})
    assert result.returncode == 0 and result.stdout.strip() == "nothing was running"
