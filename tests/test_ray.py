"""Fan-out on a real local Ray cluster: a sweep stage run through it writes what it writes in-process.

The head is started here as the README's recipe starts it (`ray start --head` on a free 127.0.0.1 port,
with Ray's token authentication: Ray listens on every interface whatever `--node-ip-address` says) and
stopped afterwards. Also: a driver without the token is refused, an address where no cluster answers
fails in seconds with one line, and a worker killed mid-stage fails the stage with one line and writes nothing.
"""
from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import addresses, run, stage_env
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
RAY = str(Path(sys.executable).parent / "ray")
TIMING_COLUMNS = {"train_seconds", "seconds_to_near_best"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[dict[str, str]]:
    """The environment a driver needs: the head's address and its token."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    cluster = {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**stage_env(Path(folder)), **cluster}
    env.pop("RAY_ADDRESS")
    start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
             "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", folder]
    started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    try:
        yield cluster
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_driver_without_the_token_is_refused(ray_address: dict[str, str]) -> None:
    """A driver with the token is admitted: the sweep below runs its tasks through this head."""
    driver = "import ray; ray.init(log_to_driver=False); print(ray.get(ray.remote(lambda: 41 + 1).remote()))"
    outsider = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    refused = subprocess.run([sys.executable, "-c", driver], env={**outsider, "RAY_ADDRESS": ray_address["RAY_ADDRESS"]},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "42" not in refused.stdout


def rows_without_timings(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def point_runs(project: Path) -> list[tuple[str, str]]:
    """(name, mean accuracy) of the newest sweep_transferability run's nested runs, in start order."""
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tests")
    parents = client.search_runs([experiment.experiment_id], "attributes.run_name = 'sweep_transferability'",
                                 order_by=["start_time DESC"])
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'",
                                  order_by=["start_time ASC"])
    return [(child.info.run_name, f"{child.data.metrics['target_accuracy']:.6f}") for child in children]


def test_sweep_on_ray_matches_in_process(project: Path, ray_address: dict[str, str]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    # with a selffer control: its tasks take the k = 0 task's chosen models (B_r) as a Ray object
    # (one source mode and one selffer mode: as many races as the two source modes took, the suite stays fast)
    params["sweeps"]["transferability"]["modes"] = ["frozen", "selffer-frozen"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([*DVC, "repro", "sweep_transferability"], project)
    rows = project / "metrics" / "sweeps" / "transferability.csv"
    in_process, in_process_runs = rows_without_timings(rows), point_runs(project)
    rows.unlink()
    result = run([*DVC, "repro", "-f", "-s", "sweep_transferability"], project,
                 env=ray_address)
    assert "Traceback" not in result.stderr
    assert rows_without_timings(rows) == in_process
    assert point_runs(project) == in_process_runs
    assert len(in_process_runs) == 6 and any(name.startswith("selffer-frozen/") for name, _ in in_process_runs)


def test_no_cluster_at_the_address_fails_fast_with_one_line(project: Path) -> None:
    run([*DVC, "repro", *addresses("prepare_target@mnist", "pretrain_source@source")], project)
    lock = (project / "dvc.lock").read_text()
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = run([*DVC, "repro", "-s", "sweep_transferability"], project, check=False, env={"RAY_ADDRESS": address})
    assert time.monotonic() - start < 60
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"RAY_ADDRESS={address}" in errors[0] and "no Ray cluster" in errors[0], result.stderr
    assert (project / "dvc.lock").read_text() == lock
    assert not (project / "metrics" / "sweeps" / "transferability.csv").exists()


def test_a_killed_worker_fails_the_stage_and_writes_nothing(project: Path, ray_address: dict[str, str]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["transfer"]["stopping"] = {"max_epochs": 3000, "patience": None}  # long enough to be caught mid-task
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([*DVC, "repro", *addresses("prepare_target@mnist", "pretrain_source@source")], project)
    stage = subprocess.Popen([*DVC, "repro", "-s", "sweep_transferability"], cwd=project,
                             env={**stage_env(project), **ray_address},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = 0
    deadline = time.monotonic() + 240
    while not killed and stage.poll() is None and time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if any("ray::_race_task" in part for part in process.info["cmdline"] or []):
                process.send_signal(signal.SIGKILL)
                killed += 1
        time.sleep(0.2)
    _, stderr = stage.communicate(timeout=300)
    assert killed, "no Ray task was seen running"
    assert stage.returncode != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Ray lost task" in errors[0] and "nothing was written" in errors[0], stderr
    assert not (project / "metrics" / "sweeps" / "transferability.csv").exists()
