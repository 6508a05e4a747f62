"""The pre-flight (`transferlab.launch.preflight`): what would hang or flood DVC itself is refused before DVC starts.

Issue 26: a FIFO in data/raw hung `dvc repro` and `dvc status` while DVC hashed the folder, a link to
/dev/zero never ended, a link to /etc/passwd was hashed as data, and an alias bomb in params.yaml
made DVC expand ~6 GB — all before the `validate` stage (which refuses each) could run.
`test_dvc_itself_hangs_on_a_fifo` reproduces DVC's own hang (upstream behaviour); the rest check
that `make run`'s commands, run in a real git + DVC project, stop first with one line, a non-zero
exit, nothing recorded, and no hang.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, hostile_file, make_project, stage_env, tiny_params

from transferlab.config import loading
from transferlab.launch import preflight

BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]",
                  *(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10))]) + "\n"


def _refusal(root: Path) -> str:
    line = preflight.refused(root)
    assert line is not None and line.startswith("error: ") and len(line.splitlines()) == 1, line
    return line


# ---------------------------------------------------------------- params.yaml


def test_the_cap_is_the_one_stages_apply() -> None:
    assert preflight.MAX_YAML_VALUES == loading.MAX_YAML_VALUES


def test_this_repository_passes() -> None:
    """The committed params.yaml (no alias today) and data folders pass, in well under a second."""
    start = time.monotonic()
    assert preflight.refused(ROOT) is None
    assert time.monotonic() - start < 2


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(BOMB)  # 10^9 values once expanded
    start = time.monotonic()
    line = _refusal(tmp_path)
    assert time.monotonic() - start < 2
    assert line.startswith("error: params.yaml: expands to more than 100,000 values through YAML aliases"), line


def test_a_few_aliases_pass_and_are_counted_as_expanded(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("base: &b {lr: 0.1, momentum: 0.9}\none: *b\ntwo: {<<: *b, lr: 0.2}\n")
    assert preflight.refused(tmp_path) is None
    from ruamel.yaml import YAML

    node = YAML(typ="safe").compose("a: &a [1, 2]\nb: [*a, *a]\n")
    assert preflight.expanded_values(node) == loading._expanded_values({"a": [1, 2], "b": [[1, 2], [1, 2]]}, 10**6)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("a: &a [1, *a]\n")
    assert "an alias inside its own anchor" in _refusal(tmp_path)


@pytest.mark.parametrize("kind, fragment", [("fifo", "not a regular file (a FIFO)"), ("/dev/zero", "is a link to /dev/zero")])
def test_params_yaml_itself_must_be_a_regular_file(tmp_path: Path, kind: str, fragment: str) -> None:
    hostile_file(tmp_path / "params.yaml", kind)
    line = _refusal(tmp_path)
    assert line.startswith("error: params.yaml: ") and fragment in line, line


# ---------------------------------------------------------------- the files DVC hashes


@pytest.mark.parametrize("where, kind, fragment", [
    ("data/raw/sub/pipe", "fifo", "not a regular file (a FIFO)"),
    ("data/raw/zero.npz", "/dev/zero", "is a link to /dev/zero, outside data/raw/"),
    ("data/raw/passwd.npz", "/etc/passwd", "is a link to /etc/passwd, outside data/raw/"),
    ("data/raw/gone.npz", "missing.npz", "a broken link"),
    ("metrics/pipe.json", "fifo", "not a regular file (a FIFO)"),  # the report's dependency folders
    ("runs/zero.json", "/dev/zero", "is a link to /dev/zero, outside this repository"),
])
def test_a_hostile_file_dvc_hashes_is_refused(tmp_path: Path, where: str, kind: str, fragment: str) -> None:
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": {"cmd": "true", "deps": ["metrics", "runs"]}}}))
    (tmp_path / "params.yaml").write_text("a: 1\n")
    hostile_file(tmp_path / where, kind)
    line = _refusal(tmp_path)
    assert line.startswith(f"error: {where}: ") and fragment in line, line


def test_links_that_stay_inside_pass(tmp_path: Path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/real.npz").write_bytes(b"")
    (tmp_path / "data/raw/alias.npz").symlink_to("real.npz")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    assert preflight.refused(tmp_path) is None


def test_a_fifo_as_a_model_file_is_refused(tmp_path: Path) -> None:
    """`model_files.<name>.path` is the `${item.path}` dependency of `model_file@<name>`: hashed by DVC too."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"model_files": {"theirs": {"format": "npz", "path": "theirs.npz"}}}))
    os.mkfifo(tmp_path / "theirs.npz")
    assert _refusal(tmp_path).startswith("error: theirs.npz: not a regular file (a FIFO)")


# ---------------------------------------------------------------- `make run` in a real project


def make_run_commands() -> list[str]:
    """The project's commands of `make run` (`make -n`), with this interpreter's bin folder for `.venv/bin/`."""
    dry = subprocess.run(["make", "--no-print-directory", "-n", "run"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    commands = [line for line in dry.stdout.splitlines() if "-m transferlab." in line]
    assert [command.split()[2] for command in commands] == [
        "transferlab.launch.preflight", "transferlab.tools.pipeline", "transferlab.launch.warm"], commands
    return [command.replace(".venv/bin/", f"{Path(sys.executable).parent}/") for command in commands]


def run_like_make(project: Path, seconds: float = 60) -> subprocess.CompletedProcess:
    """`make run`'s commands in `project` (stopping at the first that fails, as make does), killed as a group if they outlive `seconds`."""
    script = "\n".join(["set -e", *make_run_commands()])  # a line each: make's lines end in comments
    process = subprocess.Popen(["bash", "-c", script], cwd=project, env=stage_env(project), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"`make run` hung for {seconds} s")
    return subprocess.CompletedProcess(script, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("preflight") / "project", tiny_params())


@pytest.mark.slow
@pytest.mark.parametrize("where, kind, fragment", [
    ("data/raw/pipe.npz", "fifo", "data/raw/pipe.npz: not a regular file (a FIFO)"),
    ("data/raw/zero.npz", "/dev/zero", "data/raw/zero.npz: is a link to /dev/zero, outside data/raw/"),
    ("data/raw/passwd", "/etc/passwd", "data/raw/passwd: is a link to /etc/passwd, outside data/raw/"),
    ("params.yaml", BOMB, "params.yaml: expands to more than 100,000 values through YAML aliases"),
    ("params.yaml", "fifo", "params.yaml: not a regular file (a FIFO)"),
])
def test_make_run_stops_before_dvc_with_one_line(tiny_project: Path, where: str, kind: str, fragment: str) -> None:
    path = tiny_project / where
    params = (tiny_project / "params.yaml").read_text()
    if kind == BOMB:
        path.write_text(kind)
    else:
        path.unlink(missing_ok=True)  # params.yaml, replaced by the hostile file
        hostile_file(path, kind)
    try:
        start = time.monotonic()
        result = run_like_make(tiny_project)
        elapsed = time.monotonic() - start
    finally:
        path.unlink()
        if where == "params.yaml":
            path.write_text(params)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and fragment in errors[0], result.stderr
    assert elapsed < 30, elapsed
    for recorded in ("dvc.lock", "data/prepared/params_ok.json", "mlflow.db", "metrics"):
        assert not (tiny_project / recorded).exists(), recorded


@pytest.mark.slow
def test_dvc_itself_hangs_on_a_fifo(tmp_path: Path) -> None:
    """Upstream behaviour, the reason for the pre-flight: `dvc status` blocks reading a FIFO in a dependency folder."""
    project = tmp_path / "p"
    project.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t.invalid"}
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                    [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(command, cwd=project, env=env, check=True, capture_output=True, timeout=120)
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "true", "deps": ["data/raw"]}}}))
    hostile_file(project / "data/raw/pipe", "fifo")
    dvc = subprocess.Popen([sys.executable, "-m", "dvc", "status"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    # DVC blocks in open() on the FIFO, waiting for a writer: a writer's non-blocking open succeeds exactly when a reader
    # is there. Seen, DVC is stopped before the writer's end closes (which would hand it an empty file and let it go on).
    blocked, deadline = False, time.monotonic() + 60
    try:
        while not blocked and dvc.poll() is None and time.monotonic() < deadline:
            try:
                writer = os.open(project / "data/raw/pipe", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.05)
                continue
            blocked = True
            os.killpg(dvc.pid, signal.SIGKILL)
            os.close(writer)
    finally:
        if dvc.poll() is None:
            os.killpg(dvc.pid, signal.SIGKILL)
        dvc.wait()
    assert blocked, "dvc status no longer blocks on a FIFO: the upstream note in docs/operations.md can go"
    line = preflight.refused(project)
    assert line == ("error: data/raw/pipe: not a regular file (a FIFO), which DVC hashes before any stage runs;"
                    " refused, reading it could block or never end: remove it")


def test_the_launcher_refuses_before_it_starts_the_command(tmp_path: Path) -> None:
    """`make verify` runs `launch.warm -- dvc repro -f` without `make run`'s first step: the launcher checks too."""
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "true", "deps": ["data/raw"]}}}))
    hostile_file(tmp_path / "data/raw/pipe", "fifo")
    result = subprocess.run([sys.executable, "-m", "transferlab.launch.warm", "--", "touch", "ran"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == preflight.EXIT_REFUSED and not (tmp_path / "ran").exists()
    assert result.stderr.splitlines() == [("error: data/raw/pipe: not a regular file (a FIFO), which DVC hashes before"
                                           " any stage runs; refused, reading it could block or never end: remove it")]


def test_pipeline_check_says_bad_params_in_one_line(tmp_path: Path) -> None:
    """`make run`'s second step reads params.yaml too: bad params are the line `validate` would print, not a traceback."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(unknown=1)))
    result = subprocess.run([sys.executable, "-m", "transferlab.tools.pipeline", "--check"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: params.yaml: unknown: unknown key"], result.stderr
