"""Fan-out on a real local Ray cluster: a sweep stage run through it writes what it writes in-process.

The head is started here as docs/operations.md's recipe starts it: on loopback only
(`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, for head and drivers: Ray then takes 127.0.0.1 as this
node's address and binds every port there; without it `--node-ip-address 127.0.0.1` is replaced by
the machine's address and the GCS and raylet listen on every interface), with Ray's token
authentication (loopback still admits every local user), and stopped afterwards by its own
processes' ids (`ray stop` ends every Ray process of the machine). Also: the head's and a driver's
listening sockets are all on loopback, a driver without the token is refused, an address where no
cluster answers fails in seconds with one line, and a worker killed mid-stage fails the stage with
one line and writes nothing.
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
import textwrap
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


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
LOCAL_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # this node's address is 127.0.0.1 (docs/operations.md)
MARK = "TRANSFERLAB_TEST_RAY_HEAD"  # in the environment of every process the head starts: how its processes are found


def head_processes(folder: str) -> list[psutil.Process]:
    """The head's processes (and their children: raylet's workers and agents), found by the marker or the temp folder."""
    roots = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(folder in part for part in process.info["cmdline"] or []) or process.environ().get(MARK) == folder:
                roots.append(process)
        except psutil.Error:
            continue
    family: dict[int, psutil.Process] = {}
    for root in roots:
        try:
            for process in (root, *root.children(recursive=True)):
                family[process.pid] = process
        except psutil.Error:
            continue
    return list(family.values())


def stop_head(folder: str) -> None:
    """End the head's processes by id (SIGTERM, then SIGKILL): never `ray stop`, which ends every Ray on the machine.

    The GCS and a Python helper outlive SIGTERM by more than 10 s, hence SIGKILL after 3: nothing of it is kept."""
    processes = head_processes(folder)
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(_running(process) for process in processes):
        time.sleep(0.2)
    for process in processes:
        if _running(process):
            try:
                process.kill()
            except psutil.Error:
                pass


def _running(process: psutil.Process) -> bool:
    """Still running (a zombie the init process has not reaped yet counts as ended)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[dict[str, str], str]]:
    """The environment a driver needs (the head's address, its token, the loopback switch), and the head's temp folder."""
    port = free_port()
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    cluster = {"RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
               **LOCAL_ONLY}
    env = {**stage_env(Path(folder)), **cluster, MARK: folder}
    env.pop("RAY_ADDRESS")
    start = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
             "--ray-client-server-port", str(free_port()), "--include-dashboard=false", "--disable-usage-stats",
             "--temp-dir", folder]
    try:
        started = subprocess.run(start, check=False, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stderr
        yield cluster, folder
    finally:
        stop_head(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_address(ray_head: tuple[dict[str, str], str]) -> dict[str, str]:
    return ray_head[0]


def listening(processes: list[psutil.Process]) -> dict[tuple[str, int], str]:
    """(address, port) -> process name of every listening TCP socket and bound UDP socket of `processes`."""
    found = {}
    for process in processes:
        try:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN or (connection.type == socket.SOCK_DGRAM and connection.laddr):
                    found[(connection.laddr.ip, connection.laddr.port)] = process.name()
        except psutil.Error:
            continue
    return found


def test_the_head_and_a_driver_listen_on_loopback_only(ray_head: tuple[dict[str, str], str], tmp_path: Path) -> None:
    """Every socket the head's processes, its workers and a driver listen on is bound to 127.0.0.1 (or ::1), and none
    answers on the machine's other addresses."""
    cluster, folder = ray_head
    driver = textwrap.dedent("""
        import sys, time, ray
        ray.init(log_to_driver=False)
        hold = ray.remote(lambda: time.sleep(20))
        tasks = [hold.remote() for _ in range(2)]  # two workers, each with its own ports
        time.sleep(8)
        print("running", flush=True)
        ray.get(tasks)
    """)
    log = tmp_path / "driver.log"
    with log.open("w") as output:  # a file, not a pipe: Ray's processes may outlive the driver holding it
        process = subprocess.Popen([sys.executable, "-c", driver], env={**os.environ, **cluster}, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "running" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "running" in log.read_text(), log.read_text()
        family = [*head_processes(folder), psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        sockets = listening(family)
    finally:
        process.kill()
        process.wait(timeout=30)
    names = set(sockets.values())
    assert {"gcs_server", "raylet"} <= names and sum(name.startswith("ray::") for name in names) >= 1, sockets
    assert int(cluster["RAY_ADDRESS"].rsplit(":", 1)[1]) in {port for _, port in sockets}
    exposed = {f"{address}:{port} ({name})" for (address, port), name in sockets.items() if address not in LOOPBACK}
    assert not exposed, f"listening outside loopback: {sorted(exposed)}"
    others = [entry.address for entries in psutil.net_if_addrs().values() for entry in entries
              if entry.family == socket.AF_INET and not entry.address.startswith("127.")]
    for address in others:  # the machine's own addresses: nothing of the cluster answers there
        for _, port in sockets:
            with socket.socket() as probe:
                probe.settimeout(2)
                assert probe.connect_ex((address, port)) != 0, f"{address}:{port} answers"


def test_a_driver_without_the_token_is_refused(ray_address: dict[str, str]) -> None:
    """A driver with the token is admitted: the sweep below runs its tasks through this head."""
    driver = "import ray; ray.init(log_to_driver=False); print(ray.get(ray.remote(lambda: 41 + 1).remote()))"
    outsider = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    outsider |= {"RAY_ADDRESS": ray_address["RAY_ADDRESS"], **LOCAL_ONLY}  # on loopback as the head, without its token
    refused = subprocess.run([sys.executable, "-c", driver], check=False, env=outsider, capture_output=True, text=True,
                             timeout=120)
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
