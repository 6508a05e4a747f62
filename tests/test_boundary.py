"""The boundary (issue 25): any Keras model of built-in layers loads (a Dense stack runs on the stacked engine,
any other network on Keras' own layers, cut into blocks); a layer whose code is not Keras' own (a custom class,
a subclass of a built-in, a Lambda) is refused with one line naming the file and the layer. Every model is a
tiny real Keras model saved as `.keras` and loaded as the project loads one: `zoo.load_keras`, and the
`model_files@` / `zoo@` stage in-process."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from test_failfast import assert_one_line, call_main, write_params

from transferlab.errors import ModelError
from transferlab.models import blocks, networks, zoo

INPUTS = 8
SUPPORTED = networks.SUPPORTED


@keras.saving.register_keras_serializable(package="test_boundary")
class Doubler(keras.layers.Layer):
    """A custom layer: registered in this process, so it loads; the engine still cannot run it."""

    def call(self, inputs: Any) -> Any:
        return inputs * 2


@keras.saving.register_keras_serializable(package="test_boundary")
class LoudDense(keras.layers.Dense):
    """A Dense subclass may change its arithmetic: `isinstance(layer, Dense)` would let it through."""

    def call(self, inputs: Any) -> Any:
        return super().call(inputs) * 2


def flat_chain(*layers: keras.layers.Layer, shape: tuple[int, ...] = (INPUTS,)) -> keras.Model:
    inputs = keras.Input(shape=shape, name="pixels")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def normalised_dense() -> keras.Model:
    """The issue's once silent case: BatchNormalization and Dropout between hidden1 and outputs."""
    return flat_chain(keras.layers.Dense(6, activation="relu", name="hidden1"), keras.layers.BatchNormalization(name="norm"),
                      keras.layers.Dropout(0.5, name="drop"), keras.layers.Dense(3, activation="softmax", name="outputs"))


def conv_net() -> keras.Model:
    """A CNN whose convolution is even named hidden1: a network of blocks, not a Dense stack (no `.units` read)."""
    return flat_chain(keras.layers.Conv2D(2, 3, name="hidden1"), keras.layers.Flatten(name="flatten"),
                      keras.layers.Dense(3, activation="softmax", name="outputs"), shape=(6, 6, 1))


def branched() -> keras.Model:
    """Two branches joined by Concatenate, under a head: one block (no single tensor between the branches)."""
    inputs = keras.Input(shape=(INPUTS,))
    left, right = keras.layers.Dense(3, name="hidden1")(inputs), keras.layers.Dense(3, name="hidden2")(inputs)
    joined = keras.layers.Concatenate(name="join")([left, right])
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="outputs")(joined))


def saved(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


# models that once stopped at the boundary and now load: (the model, its blocks' first layers, lowest first)
LOADED: dict[str, tuple[Callable[[], keras.Model], list[str]]] = {
    "batchnorm-dropout": (normalised_dense, ["hidden1", "outputs"]),
    "conv2d": (conv_net, ["hidden1", "outputs"]),
    "branches": (branched, ["hidden1", "outputs"]),
    "no-bias": (lambda: flat_chain(keras.layers.Dense(3, use_bias=False, name="hidden1"), keras.layers.Dense(2, name="outputs")),
                ["hidden1", "outputs"]),
    "activation": (lambda: flat_chain(keras.layers.Dense(3, activation="gelu", name="hidden1"), keras.layers.Dense(2, name="outputs")),
                   ["hidden1", "outputs"]),
    "not-flattened": (lambda: flat_chain(keras.layers.Dense(3, name="hidden1"), keras.layers.Flatten(name="flat"),
                                         keras.layers.Dense(2, name="outputs"), shape=(4, 2)), ["hidden1", "outputs"]),
    "out-of-order": (lambda: flat_chain(keras.layers.Dense(3, name="hidden2"), keras.layers.Dense(3, name="hidden1")),
                     ["hidden2", "hidden1"]),
}


@pytest.mark.parametrize("case", LOADED, ids=list(LOADED))
def test_a_network_of_built_in_layers_loads_as_blocks(case: str, tmp_path: Path) -> None:
    """It loads with its weights, is no Dense stack (so the Keras-layers engine runs it), and has blocks to reuse."""
    build, firsts = LOADED[case]
    model = build()
    loaded = zoo.load_keras(saved(model, tmp_path / f"{case}.keras"))
    assert not networks.is_dense_chain(loaded)
    assert [block.layers[0] for block in blocks.blocks(loaded)] == firsts
    x = np.random.default_rng(0).random((3, *model.input_shape[1:]), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


REFUSED: dict[str, tuple[Callable[[], keras.Model], str]] = {
    "lambda": (lambda: flat_chain(keras.layers.Dense(3, name="hidden1"), keras.layers.Lambda(lambda t: t * 2, name="twice")),
               "refused, it contains a Lambda layer"),
    "custom-layer": (lambda: flat_chain(keras.layers.Dense(3, name="hidden1"), Doubler(name="twice")),
                     "layer twice (Doubler) is not a built-in Keras layer"),
    "dense-subclass": (lambda: flat_chain(LoudDense(3, name="hidden1")), "layer hidden1 (LoudDense) is not a built-in Keras layer"),
    "shared-layer": (lambda: shared(), "layer twice_used (Dense) is applied more than once"),
}


def shared() -> keras.Model:
    """One layer applied twice (shared weights): no blocks, since a block owns its layers."""
    inputs, layer = keras.Input(shape=(3,)), keras.layers.Dense(3, name="twice_used")
    return keras.Model(inputs, layer(layer(inputs)))


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_model_the_engines_cannot_run_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    build, reason = REFUSED[case]
    path = saved(build(), tmp_path / f"{case}.keras")
    with pytest.raises(ModelError) as refused:
        zoo.load_keras(path)
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"{path}: ") and reason in line, line
    if case != "lambda":  # unsafe code is refused before anything else is said
        assert SUPPORTED in line, line


def test_an_hdf5_file_is_never_loaded(tmp_path: Path) -> None:
    """Keras 2's format is converted to .keras outside the pipeline (docs/strategies.md); the line says so."""
    path = tmp_path / "theirs.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(8))  # an HDF5 signature: not even opened
    with pytest.raises(ModelError) as refused:
        zoo.load_keras(path)
    assert str(refused.value) == (f"{path}: an HDF5 model is not loaded, only the .keras format; convert it to .keras first "
                                  "(docs/strategies.md, Bring your own network)")


def test_an_unregistered_custom_class_is_named(tmp_path: Path) -> None:
    """In a fresh process the custom class is unknown: Keras' message names only the model's class on its first line."""
    path = saved(flat_chain(keras.layers.Dense(3, name="hidden1"), Doubler(name="twice")), tmp_path / "custom.keras")
    registered = keras.saving.get_custom_objects().pop("test_boundary>Doubler")
    try:
        with pytest.raises(ModelError) as refused:
            zoo.load_keras(path)
    finally:
        keras.saving.get_custom_objects()["test_boundary>Doubler"] = registered
    assert str(refused.value).startswith(f"{path}: refused, layer class 'Doubler' is not a built-in Keras layer")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("head", [[networks.LayerSpec(networks.OUTPUT, 3, "softmax")], [networks.LayerSpec(networks.SCORE, 1, "linear")], []],
                         ids=["dnn5", "ranking-scorer", "encoder"])
def test_the_projects_own_networks_still_load(head: list, tmp_path: Path) -> None:
    """The DNN5 (images flattened inside), and what pretraining writes: a scorer's `score` unit, a bare encoder."""
    hidden = [networks.LayerSpec(networks.hidden_name(i + 1), 4, "relu") for i in range(5)]
    model = networks.build((6, 6, 1), [*hidden, *head], "he_normal", seed=1)
    loaded = zoo.load_keras(saved(model, tmp_path / "dnn5.keras"))
    assert [layer.name for layer in networks.hidden_layers(loaded)] == [f"hidden{i}" for i in range(1, 6)]
    x = np.random.default_rng(0).random((4, 6, 6, 1), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_trained_variant_with_new_layers_loads(tmp_path: Path) -> None:
    specs = networks.target_layers(networks.build(INPUTS, networks.dnn_layers([4, 4], "tanh", 3), "he_normal", 1), 1, [5], "relu", 2)
    assert zoo.load_keras(saved(networks.build(INPUTS, specs, "he_normal", 1), tmp_path / "variant.keras"))


def test_describe_and_register_describe_a_cnn_by_its_blocks(tmp_path: Path) -> None:
    """`import_model.describe` and `registry.register_keras` once stopped on `int(layer.units)` of a Conv2D."""
    from stages import import_model

    path = saved(conv_net(), tmp_path / "cnn.keras")
    source = {"x_test": np.zeros((2, 36), np.float32), "y_test": np.zeros(2, np.int64)}
    described = import_model.describe(path, source)
    assert "hidden_layers" not in described and described["input_shape"] == [6, 6, 1]
    assert described["blocks"] == {"hidden1..flatten": 20, "outputs": 3 * 32 + 3}
    assert import_model.reusable(described) == (1, "blocks below the head")


def test_input_of_no_fixed_size_is_refused_in_one_line() -> None:
    from transferlab import data
    from transferlab.errors import DataError

    arrays = {"x_test": np.zeros((2, 8, 8, 3), np.float32)}
    with pytest.raises(DataError, match=r"models/cnn\.keras: its input is \?x\?x3, not of a fixed size"):
        data.check_input_size(arrays, (None, None, None, 3), "cnn", "t")
    data.check_input_size(arrays, (None, 8, 8, 3), "cnn", "t")  # a CNN's image input
    data.check_input_size(arrays, (None, 192), "cnn", "t")  # a flat input: the images flattened


# --- through the stage: model_files@ and zoo@ ---------------------------------------------------------


def _source_task(workdir: Path) -> None:
    from transferlab import paths
    from transferlab.data.datafiles import save_npz

    rng = np.random.default_rng(0)
    save_npz(workdir / paths.source_data("source"), x_train=rng.random((20, 28, 28, 1), np.float32), y_train=np.arange(20) % 5,
             x_test=rng.random((5, 28, 28, 1), np.float32), y_test=np.arange(5))


def test_model_file_with_batchnorm_is_imported_by_the_stage(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from stages import import_model

    saved(normalised_dense(), workdir / "theirs.keras")
    _source_task(workdir)
    write_params(workdir, lambda p: p.update(model_files={"theirs": {"format": "keras", "path": "theirs.keras"}}))
    import_model.main(["theirs"])
    assert "imported theirs from theirs.keras: 2 blocks" in capsys.readouterr().out
    record = json.loads((workdir / "metrics/theirs.json").read_text())  # the blocks: transfer@ depends on them
    assert record["blocks"] == {"hidden1..drop": 8 * 6 + 6 + 4 * 6, "outputs": 6 * 3 + 3} and "hidden_layers" not in record
    assert (workdir / "models/theirs.keras").read_bytes() == (workdir / "theirs.keras").read_bytes()


def test_model_file_with_a_custom_layer_is_refused_by_the_stage(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    from stages import import_model

    saved(flat_chain(keras.layers.Dense(3, name="hidden1"), Doubler(name="twice")), workdir / "theirs.keras")
    _source_task(workdir)
    write_params(workdir, lambda p: p.update(model_files={"theirs": {"format": "keras", "path": "theirs.keras"}}))
    assert_one_line(call_main(import_model.main, ["theirs"], capsys), "theirs.keras: layer twice (Doubler)", SUPPORTED)
    assert not (workdir / "models/theirs.keras").exists()


def test_registry_entry_with_a_dense_subclass_is_refused_by_the_stage(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A version registered before the check existed (logged here without it) is refused when fetched, named by its URI."""
    import mlflow
    from mlflow import MlflowClient

    from stages import import_model
    from transferlab import tracking
    from transferlab.tracking import registry

    model = flat_chain(LoudDense(3, name="hidden1"))
    path = saved(model, workdir / "old.keras")
    with tracking.stage_run("tests", "publish", {"stage": "probe"}, {}):
        logged = registry.log_keras(path, np.zeros((2, INPUTS), np.float32), name="old", model=model)  # bypasses load_keras
        client = MlflowClient()
        client.create_registered_model("old")
        client.create_model_version("old", source=logged.model_uri, run_id=mlflow.active_run().info.run_id, model_id=logged.model_id)
    _source_task(workdir)
    write_params(workdir, lambda p: p["zoo"].update(old={"kind": "registry", "uri": "models:/old/1"}))
    assert_one_line(call_main(import_model.main, ["old"], capsys), "models:/old/1: layer hidden1 (LoudDense)", SUPPORTED)
    assert not (workdir / "models/old.keras").exists()
