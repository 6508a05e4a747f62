"""The boundary (issue 25): a model the engine cannot run exactly is refused with one line, never loaded
with a layer skipped. Every model is a tiny real Keras model saved as `.keras` and loaded as the project
loads one: `zoo.load_keras`, and the `model_files@` / `zoo@` stage in-process."""
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
from transferlab.models import networks, zoo

INPUTS = 8
SUPPORTED = "CNNs, BatchNormalization and Dropout are not supported yet (issue 25)"


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
    """The issue's silent case: BatchNormalization and Dropout between hidden1 and outputs."""
    return flat_chain(keras.layers.Dense(6, activation="relu", name="hidden1"), keras.layers.BatchNormalization(name="norm"),
                      keras.layers.Dropout(0.5, name="drop"), keras.layers.Dense(3, activation="softmax", name="outputs"))


def conv_net() -> keras.Model:
    """A CNN whose convolution is even named hidden1: refused by its class, not an AttributeError on `.units`."""
    return flat_chain(keras.layers.Conv2D(2, 3, name="hidden1"), keras.layers.Flatten(name="flatten"),
                      keras.layers.Dense(3, activation="softmax", name="outputs"), shape=(6, 6, 1))


def branched() -> keras.Model:
    inputs = keras.Input(shape=(INPUTS,))
    left, right = keras.layers.Dense(3, name="hidden1")(inputs), keras.layers.Dense(3, name="hidden2")(inputs)
    return keras.Model(inputs, keras.layers.Concatenate(name="join")([left, right]))


def saved(model: keras.Model, path: Path) -> Path:
    model.save(path)
    return path


REFUSED: dict[str, tuple[Callable[[], keras.Model], str]] = {
    "batchnorm-dropout": (normalised_dense, "layer norm (BatchNormalization): not a Dense layer"),
    "conv2d": (conv_net, "layer hidden1 (Conv2D): not a Dense layer"),
    "lambda": (lambda: flat_chain(keras.layers.Dense(3, name="hidden1"), keras.layers.Lambda(lambda t: t * 2, name="twice")),
               "refused, it contains a Lambda layer"),
    "custom-layer": (lambda: flat_chain(keras.layers.Dense(3, name="hidden1"), Doubler(name="twice")), "layer twice (Doubler)"),
    "dense-subclass": (lambda: flat_chain(LoudDense(3, name="hidden1")), "layer hidden1 (LoudDense)"),
    "branches": (branched, "layer join (Concatenate): not a chain, it reads 2 tensors"),
    "no-bias": (lambda: flat_chain(keras.layers.Dense(3, use_bias=False, name="hidden1")), "layer hidden1 (Dense): has no bias"),
    "activation": (lambda: flat_chain(keras.layers.Dense(3, activation="gelu", name="hidden1")), "activation 'gelu'"),
    "not-flattened": (lambda: flat_chain(keras.layers.Dense(3, name="hidden1"), shape=(4, 2)), "input of shape (4, 2) is not flattened"),
    "out-of-order": (lambda: flat_chain(keras.layers.Dense(3, name="hidden2"), keras.layers.Dense(3, name="hidden1")),
                     "layer hidden2 (Dense): no layer named hidden1"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_a_model_the_engine_cannot_run_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    build, reason = REFUSED[case]
    path = saved(build(), tmp_path / f"{case}.keras")
    with pytest.raises(ModelError) as refused:
        zoo.load_keras(path)
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"{path}: ") and reason in line, line
    if case != "lambda":  # unsafe code is refused before anything else is said
        assert SUPPORTED in line, line


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


def test_describe_and_register_refuse_a_cnn_before_reading_units(tmp_path: Path) -> None:
    """`import_model.describe` and `registry.register_keras` used to stop on `int(layer.units)` of a Conv2D."""
    from stages import import_model
    from transferlab.tracking import registry

    path = saved(conv_net(), tmp_path / "cnn.keras")
    source = {"x_test": np.zeros((2, 36), np.float32), "y_test": np.zeros(2, np.int64)}
    with pytest.raises(ModelError, match=r"cnn\.keras: layer hidden1 \(Conv2D\)"):
        import_model.describe(path, source)
    with pytest.raises(ModelError, match=r"cnn\.keras: layer hidden1 \(Conv2D\)"):
        registry.register_keras(path, "cnn", {}, np.zeros((2, 6, 6, 1), np.float32))  # refused before it needs a run


# --- through the stage: model_files@ and zoo@ ---------------------------------------------------------


def _source_task(workdir: Path) -> None:
    from transferlab import paths
    from transferlab.data.datafiles import save_npz

    rng = np.random.default_rng(0)
    save_npz(workdir / paths.source_data("source"), x_train=rng.random((20, 28, 28, 1), np.float32), y_train=np.arange(20) % 5,
             x_test=rng.random((5, 28, 28, 1), np.float32), y_test=np.arange(5))


def test_model_file_with_batchnorm_is_refused_by_the_stage(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    from stages import import_model

    saved(normalised_dense(), workdir / "theirs.keras")
    _source_task(workdir)
    write_params(workdir, lambda p: p.update(model_files={"theirs": {"format": "keras", "path": "theirs.keras"}}))
    assert_one_line(call_main(import_model.main, ["theirs"], capsys), "theirs.keras: layer norm (BatchNormalization)", SUPPORTED)
    assert not (workdir / "models/theirs.keras").exists()


def test_registry_entry_with_batchnorm_is_refused_by_the_stage(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A version registered before the check existed (logged here without it) is refused when fetched, named by its URI."""
    import mlflow
    from mlflow import MlflowClient

    from stages import import_model
    from transferlab import tracking
    from transferlab.tracking import registry

    model = normalised_dense()
    path = saved(model, workdir / "old.keras")
    with tracking.stage_run("tests", "publish", {"stage": "probe"}, {}):
        logged = registry.log_keras(path, np.zeros((2, INPUTS), np.float32), name="old", model=model)  # bypasses load_keras
        client = MlflowClient()
        client.create_registered_model("old")
        client.create_model_version("old", source=logged.model_uri, run_id=mlflow.active_run().info.run_id, model_id=logged.model_id)
    _source_task(workdir)
    write_params(workdir, lambda p: p["zoo"].update(old={"kind": "registry", "uri": "models:/old/1"}))
    assert_one_line(call_main(import_model.main, ["old"], capsys), "models:/old/1: layer norm (BatchNormalization)", SUPPORTED)
    assert not (workdir / "models/old.keras").exists()
