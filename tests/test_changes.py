"""The report's *What changed since the previous committed run*: against a real git commit in a temp repository."""
from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import write_result
from test_reporting import FREEZE, REUSE, SCRATCH

from transferlab.report import changes, render


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    """A repository whose last commit holds scratch's and reuse5's metrics files (and an old variant's)."""
    git(tmp_path, "init", "-q")
    for result in (SCRATCH, REUSE, replace(REUSE, variant="old3")):
        write_result(tmp_path, result)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "a run")
    return tmp_path


def written(results: list, repo: Path) -> list[tuple[str, object]]:
    report = render.Report("t")
    changes.section(report, results, repo=repo)
    return report.blocks


def test_a_moved_variant_is_tabled_against_the_commit_and_new_and_gone_ones_named(repo: Path) -> None:
    sha, date = git(repo, "log", "-1", "--format=%h %cs").split()
    better = replace(REUSE, repetitions=[replace(r, target_accuracy=r.target_accuracy + 0.02) for r in REUSE.repetitions])
    heading, said, (_, table) = written([SCRATCH, better, FREEZE], repo)
    assert heading == ("h2", changes.HEADING)
    assert said == ("p", f"Against commit `{sha}` ({date}): 1 variant(s) moved by at least 0.05 points on a test set;"
                         " new since then: freeze2; no longer in this run: old3.")
    assert table.to_dict("records") == [{"variant": "reuse5", "test % now": "88.3", f"test % at {sha}": "86.3",
                                         "test Δ points": "+2.0"}]  # no shifted test set: no shifted columns


def test_nothing_moved_is_one_sentence_and_a_rounding_error_moves_nothing(repo: Path) -> None:
    git(repo, "rm", "-q", "metrics/transfer/old3.json")
    git(repo, "commit", "-qm", "old3 removed")
    sha = git(repo, "log", "-1", "--format=%h")
    noise = replace(SCRATCH, repetitions=[replace(r, target_accuracy=r.target_accuracy + 1e-5) for r in SCRATCH.repetitions])
    _, (kind, text) = written([noise, REUSE], repo)
    assert kind == "p" and text.startswith(f"Nothing moved: every variant's test accuracy is what commit `{sha}` (")
    _, (_, text) = written([noise, REUSE, FREEZE], repo)  # only a new variant: no table
    assert text.endswith(": no variant's test accuracy moved; new since then: freeze2.")


@pytest.mark.parametrize("setup", ["no repository", "no commit yet", "no git"])
def test_without_git_or_a_commit_it_says_so_in_one_line(tmp_path: Path, setup: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository around it, wherever TMPDIR is
    if setup == "no commit yet":
        git(tmp_path, "init", "-q")
    if setup == "no git":
        git(tmp_path, "init", "-q")
        monkeypatch.setenv("PATH", str(tmp_path))  # no git program to run
    assert written([SCRATCH], tmp_path)[1:] == [
        ("p", "No previous run to compare with: git or its commit `HEAD` is not available here.")]
