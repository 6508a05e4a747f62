"""The warm stage server: a stage run through it behaves as the same stage run cold.

Same metrics, same exit codes and one-line errors, signals forwarded (the run ends KILLED), the stage
dies with its caller, and a stage that cannot use the server says so and runs cold.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, address, assert_process_ends, cold_stage_env, run, stage_env

from transferlab.launch import stage_server, warm

DVC = [sys.executable, "-m", "dvc"]
VOLATILE = re.compile(r"seconds|run_id")  # timings and MLflow run ids differ between any two runs


def comparable(value: object) -> object:
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items() if not VOLATILE.search(key)}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


@pytest.mark.slow
def test_warm_stage_writes_what_a_cold_stage_writes(project: Path) -> None:
    warm_run = run([*DVC, "repro", address("transfer@freeze2")], project)
    assert "running cold" not in warm_run.stderr, warm_run.stderr
    metrics = project / "metrics" / "transfer" / "freeze2.json"
    record = project / "runs" / "transfer" / "freeze2.json"
    warm_metrics, warm_run_id = json.loads(metrics.read_text()), json.loads(record.read_text())["mlflow_run_id"]
    cold_run = subprocess.run([*DVC, "repro", "-f", "-s", address("transfer@freeze2")], cwd=project, env=cold_stage_env(project),
                              capture_output=True, text=True, timeout=600)
    assert cold_run.returncode == 0, cold_run.stderr
    cold_metrics = json.loads(metrics.read_text())
    assert warm_run_id != json.loads(record.read_text())["mlflow_run_id"]  # it did run twice
    assert comparable(warm_metrics) == comparable(cold_metrics)


def test_warm_stage_keeps_exit_code_and_one_line_error(project: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "stages.transfer", "nobody"], cwd=project, env=stage_env(project),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "running cold" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "nobody" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


SLOW_STAGE = textwrap.dedent(
    """
    import os, sys, time
    from transferlab import tracking
    from transferlab.launch import warm
    from transferlab.launch.cli import run_main

    def main(argv):
        with tracking.stage_run("t", "long", {"stage": "probe"}, {}):
            print(f"started {os.getpid()} {os.environ.get(warm.CHILD_VARIABLE, 'cold')}", flush=True)
            time.sleep(60)

    if __name__ == "__main__":
        run_main(main)
    """
)


@pytest.fixture
def slow_stage(tmp_path: Path) -> Path:
    (tmp_path / "slow_stage.py").write_text(SLOW_STAGE)
    return tmp_path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_reaches_the_warm_stage(slow_stage: Path, sig: signal.Signals) -> None:
    from mlflow.tracking import MlflowClient

    process = subprocess.Popen([sys.executable, "-m", "slow_stage"], cwd=slow_stage, env=stage_env(slow_stage),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = process.stdout.readline().split()
    assert started[0] == "started" and started[2] == "1", started  # ran in the server's fork
    assert int(started[1]) != process.pid
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + sig, stderr
    expected = "stopped by SIGTERM" if sig == signal.SIGTERM else "interrupted (Ctrl-C)"
    assert [line for line in stderr.splitlines() if line.startswith("error: ")] == [
        f"error: {expected}; nothing was recorded as done"], stderr
    client = MlflowClient(f"sqlite:///{slow_stage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t")
    assert [r.info.status for r in client.search_runs([experiment.experiment_id])] == ["KILLED"]


def test_warm_stage_dies_with_its_caller(slow_stage: Path) -> None:
    """SIGKILL to the stage process (DVC gone, say) ends the fork doing its work too."""
    process = subprocess.Popen([sys.executable, "-m", "slow_stage"], cwd=slow_stage, env=stage_env(slow_stage),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    fork = int(process.stdout.readline().split()[1])
    process.kill()
    process.wait()
    assert_process_ends(fork, "the warm stage outlived its caller")


def test_unreachable_or_different_server_runs_cold_and_says_so(slow_stage: Path) -> None:
    (slow_stage / "slow_stage.py").write_text(SLOW_STAGE.replace("time.sleep(60)", "pass"))
    cases = {
        "unreachable": {**stage_env(slow_stage), warm.SOCKET_VARIABLE: str(slow_stage / "nothing.sock")},
        "not used: environment variables read at import differ: TF_CPP_MIN_LOG_LEVEL":
            {**stage_env(slow_stage), "TF_CPP_MIN_LOG_LEVEL": "1"},
    }
    for note, env in cases.items():
        result = subprocess.run([sys.executable, "-m", "slow_stage"], cwd=slow_stage, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[2] == "cold"
        assert f"note: warm stage server {note}" in result.stderr or note in result.stderr, result.stderr


def test_a_stage_started_before_the_server_is_ready_waits_for_it(slow_stage: Path) -> None:
    """`make run` starts DVC while the server still imports TensorFlow: an early stage queues, then runs warm."""
    (slow_stage / "slow_stage.py").write_text(SLOW_STAGE.replace("time.sleep(60)", "pass"))
    with stage_server.Server(env=cold_stage_env(slow_stage), wait=False) as server:
        result = subprocess.run([sys.executable, "-m", "slow_stage"], cwd=slow_stage,
                                env={**cold_stage_env(slow_stage), warm.SOCKET_VARIABLE: server.address},
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[2] == "1" and "running cold" not in result.stderr, result.stderr


def test_the_stages_that_run_cold_import_none_of_the_preloaded_libraries() -> None:
    """Loading them starts none of PRELOAD (data.py reaches keras, scikit-learn or SciPy only for datasets that need them)."""
    code = (f"import sys; import {', '.join(warm.COLD_STAGES)}; "
            f"print(sorted({{name.split('.')[0] for name in sys.modules}} & {{name.split('.')[0] for name in {stage_server.PRELOAD!r}}}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cold_stage_env(ROOT), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
