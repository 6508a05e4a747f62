"""A shared cache: run the tiny pipeline, `dvc push` to a remote, and a fresh clone pulls instead of recomputing.

The remote is a local folder (what `dvc remote add -d shared /mnt/team/transferlab-cache` gives a
team with a shared disk); S3 and SSH remotes behave the same way (README, "Beyond one machine").
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import addresses, make_project, run, tiny_params

DVC = [sys.executable, "-m", "dvc"]
REPORT = ("reports/comparison.md", "reports/comparison.html", "reports/accuracy_per_epoch.csv")


def _small_project(path: Path) -> Path:
    """The tiny pipeline with one variant and the sweeps switched off (params null: `make pipeline` writes no stage for them)."""
    params = tiny_params()
    params["variants"] = {"scratch": params["variants"]["scratch"]}
    params["sweeps"] = {"transferability": None, "label_budget": None}
    project = make_project(path, params)
    assert not any(name.startswith("sweep_") for name in yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    return project


def _ran(output: str) -> list[str]:
    return sorted(re.findall(r"Running stage '([^']+)'", output))


@pytest.mark.slow
def test_push_then_a_fresh_clone_pulls_and_runs_nothing(tmp_path: Path) -> None:
    project = _small_project(tmp_path / "project")
    remote = tmp_path / "remote"
    run([*DVC, "remote", "add", "-d", "shared", str(remote)], project)
    assert _ran(run([*DVC, "repro"], project).stdout) == addresses(
        "validate", "prepare_source@source", "prepare_target@mnist", "pretrain_source@source", "transfer@scratch", "report")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "the run: dvc.lock, metrics, plots, report; the remote in .dvc/config"], project)
    pushed = run([*DVC, "push"], project).stdout
    assert re.search(r"\b\d+ files? pushed", pushed), pushed
    assert list(remote.rglob("*")), "the remote holds the cache"

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "models/source.keras").exists()  # models and prepared data live in the cache, not in git
    pulled = run([*DVC, "pull"], clone).stdout
    assert re.search(r"\b\d+ files? (fetched|added)", pulled), pulled
    assert json.loads(run([*DVC, "status", "--json"], clone).stdout) == {}
    output = run([*DVC, "repro"], clone).stdout
    assert _ran(output) == [], output
    assert run(["git", "status", "--porcelain"], clone).stdout == ""  # nothing rewritten, not even the report
    for name in (*REPORT, "models/source.keras", "models/transfer/scratch.keras", "metrics/transfer/scratch.json"):
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name
