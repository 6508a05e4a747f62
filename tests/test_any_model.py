"""Any Keras model under the race (issue 25), on real Keras and tiny images: the race scores as Keras' `evaluate`
does, frozen BatchNormalization keeps its statistics, `cache` ends with `freeze`'s bits, each copy of a stack
trains as it would alone, every strategy runs on a CNN, and a frozen block's Dropout is off."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from transferlab.config import (
    NetworkSpec,
    OptimizerSpec,
    Protocol,
    StoppingSpec,
    UnfreezeSpec,
    VariantSpec,
    strategies,
)
from transferlab.data import repetitions
from transferlab.models import architectures, networks
from transferlab.models import blocks as model_blocks
from transferlab.training import engine, keras_copies, race
from transferlab.training.stopping import StopRule

NETWORK = NetworkSpec(conv=[4, 4], hidden_units=[8], activation="relu", initializer="he_normal")
GRID = [OptimizerSpec(name="sgd", learning_rate=0.1), OptimizerSpec(name="adam", learning_rate=0.01)]
PROTOCOL = Protocol(batch_size=8, validation_fraction=0.25, stopping=StoppingSpec(max_epochs=3, patience=2), grid=GRID)
PLAN = repetitions.plan(2, train_seed=1, target_seed=0, resample_labels=True)
LABELS = 12  # per class: 9 to train on, 3 to validate on
SHAPE = (8, 8, 1)
BN = ("gamma", "beta", "moving_mean", "moving_variance")


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise with one bright quadrant per class (3 classes), balanced."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.random((n, *SHAPE), dtype=np.float32) * 0.6
    for i, label in enumerate(y):
        x[i, 4 * (label // 2) : 4 * (label // 2) + 4, 4 * (label % 2) : 4 * (label % 2) + 4] += 0.5
    return x, y.astype(np.int64)


def with_statistics(model: keras.Model, seed: int) -> keras.Model:
    """`model` with BatchNormalization statistics far from (0, 1), so inference mode is not the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 2, shape).astype(np.float32), rng.normal(0, 0.5, shape).astype(np.float32),
                               rng.normal(0, 0.5, shape).astype(np.float32), rng.uniform(0.5, 2, shape).astype(np.float32)])
    return model


def values(model: keras.Model) -> dict[str, np.ndarray]:
    return {v.path: v.numpy() for v in model.variables}


def strip(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    x, y = images(60, seed=0)
    return {"x_pool": x[:45], "y_pool": y[:45], "x_test": x[45:], "y_test": y[45:]}


@pytest.fixture(scope="module")
def source() -> keras.Model:
    return with_statistics(architectures.source_network(NETWORK, SHAPE, 3, seed=1), seed=2)


def variant(strategy: str, **fields) -> VariantSpec:
    return VariantSpec(strategy=strategy, init_from="source", target="t", **fields)


@pytest.fixture(scope="module")
def frozen_and_cached(source, arrays) -> dict[str, race.RaceOutcome]:
    return {name: race.race(variant(name, reuse_layers=2, frozen_layers=1), source, NETWORK, PROTOCOL, arrays, LABELS, PLAN)
            for name in ("freeze", "cache")}


# ---- 1. the race scores as Keras' evaluate, Dropout off and BatchNormalization in inference mode ----------------

def dense_bn_dropout() -> keras.Model:
    inputs = keras.Input(SHAPE, name="pixels")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(8, activation="relu", kernel_initializer=keras.initializers.HeNormal(3), name="hidden1")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Dropout(0.5, seed=4, name="drop")(x)
    outputs = layers.Dense(3, activation="softmax", kernel_initializer=keras.initializers.HeNormal(5), name="outputs")(x)
    return with_statistics(keras.Model(inputs, outputs, name="dense_bn"), seed=6)


def by_hand(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The Dense stack's inference-mode outputs in NumPy: BatchNormalization with its moving statistics, no Dropout."""
    hidden = model.get_layer("hidden1")
    h = np.maximum(x.reshape(len(x), -1) @ hidden.kernel.numpy() + hidden.bias.numpy(), 0)
    gamma, beta, mean, variance = model.get_layer("bn").get_weights()
    h = (h - mean) / np.sqrt(variance + model.get_layer("bn").epsilon) * gamma + beta
    logits = h @ model.get_layer("outputs").kernel.numpy() + model.get_layer("outputs").bias.numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def keras_evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(x, y, verbose=0)
    return loss, accuracy


def test_a_dense_stack_with_batchnorm_and_dropout_is_scored_as_keras_evaluates_it(arrays) -> None:
    model = dense_bn_dropout()
    assert not networks.is_dense_chain(model)  # so the race takes the Keras-layers engine
    x, y = arrays["x_test"], arrays["y_test"]
    (scored,) = keras_copies.score([model], x, y)
    probabilities = by_hand(model, x)  # Dropout off, the moving statistics: inference mode
    assert scored["accuracy"] == np.mean(probabilities.argmax(axis=1) == y)
    assert scored["loss"] == pytest.approx(-np.mean(np.log(probabilities[np.arange(len(y)), y])), abs=1e-5)
    assert keras_copies.score([model], x, y) == [scored]  # no Dropout draw: the same numbers again
    loss, accuracy = keras_evaluate(model, x, y)
    assert np.float32(scored["accuracy"]) == np.float32(accuracy)  # Keras' metric is a float32 count ratio
    assert scored["loss"] == pytest.approx(loss, abs=1e-6)

    protocol = PROTOCOL.model_copy(update={"grid": GRID[1:]})
    outcome = race.race(variant("reuse", reuse_layers=1), model, NETWORK, protocol, arrays, LABELS, PLAN)
    for result, trained in zip(outcome.results, outcome.models, strict=True):
        assert {layer.name for layer in trained.layers} >= {"hidden1", "bn", "drop", "outputs"}
        loss, accuracy = keras_evaluate(trained, x, y)
        assert np.float32(result.target_accuracy) == np.float32(accuracy)
        assert result.target_loss == pytest.approx(loss, abs=1e-6)


# ---- 2. frozen BatchNormalization keeps its statistics; train_bn trains them -------------------------------------

def test_frozen_batchnorm_statistics_stay_bit_identical_and_train_bn_moves_them(source, arrays, frozen_and_cached) -> None:
    original = values(source)
    for model in frozen_and_cached["freeze"].models:
        after = values(model)
        for name in ("conv1/kernel", *(f"bn1/{part}" for part in BN)):  # block 1: frozen
            np.testing.assert_array_equal(after[name], original[name], err_msg=name)
        for part in BN:  # block 2 trains: its normalization learns and its statistics move
            assert not np.array_equal(after[f"bn2/{part}"], original[f"bn2/{part}"]), part
    trained_bn = race.race(variant("freeze", reuse_layers=2, frozen_layers=1, train_bn=True), source, NETWORK, PROTOCOL,
                           arrays, LABELS, PLAN[:1])
    after = values(trained_bn.models[0])
    np.testing.assert_array_equal(after["conv1/kernel"], original["conv1/kernel"])
    for part in BN:
        assert not np.array_equal(after[f"bn1/{part}"], original[f"bn1/{part}"]), part


# ---- 3. cache ends where freeze ends -----------------------------------------------------------------------------

def test_cache_ends_with_the_bits_of_freeze(frozen_and_cached) -> None:
    frozen, cached = frozen_and_cached["freeze"], frozen_and_cached["cache"]
    for a, b in zip(frozen.results, cached.results, strict=True):
        assert (a.setting, a.best_epoch, a.epochs_run, a.val_loss) == (b.setting, b.best_epoch, b.epochs_run, b.val_loss)
        assert (a.target_accuracy, a.target_loss) == (b.target_accuracy, b.target_loss)
    for m_frozen, m_cached in zip(frozen.models, cached.models, strict=True):
        mine, theirs = values(m_frozen), values(m_cached)
        assert mine.keys() == theirs.keys()
        for name, value in mine.items():  # the cached features are the frozen part's inference-mode outputs: exact
            np.testing.assert_array_equal(value, theirs[name], err_msg=name)
    assert (frozen.trainable_params, frozen.frozen_params) == (cached.trainable_params, cached.frozen_params)


# ---- 4. each copy of a stack trains as it would alone ------------------------------------------------------------

def dropout_cnn(seed: int) -> keras.Model:
    """conv-BN-ReLU-pool, conv-BN-ReLU-Dropout-pooling, a Dense head: BatchNormalization and a seeded Dropout that trains."""
    init = lambda name: keras.initializers.HeNormal(seed=repetitions.derived_seed(seed, name))  # noqa: E731
    inputs = keras.Input(SHAPE, name="pixels")
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer=init("c1"), name="conv1")(inputs)
    x = layers.ReLU(name="act1")(layers.BatchNormalization(name="bn1")(x))
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer=init("c2"), name="conv2")(x)
    x = layers.ReLU(name="act2")(layers.BatchNormalization(name="bn2")(x))
    x = layers.Dropout(0.3, seed=repetitions.derived_seed(seed, "drop"), name="drop2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", kernel_initializer=init("out"), name="outputs")(x)
    return with_statistics(keras.Model(inputs, outputs, name="dropout_cnn"), seed=seed)


def test_each_copy_of_a_cnn_stack_matches_its_solo_run(arrays) -> None:
    x, y = arrays["x_pool"], arrays["y_pool"]
    rows = [np.arange(s, s + 30) for s in (0, 6, 12)]
    copies = [engine.Copy(rows[s], np.arange(36, 45), 10 + s, OptimizerSpec(name="sgd", learning_rate=0.05 * (s + 1)))
              for s in range(3)]
    found = [b.layers for b in model_blocks.blocks(dropout_cnn(0))]
    assert [b[-1] for b in found] == ["pool1", "gap", "outputs"]
    names = [name for block in found for name in block]

    def trained(members: list[int]) -> keras_copies.Copies:
        stack = keras_copies.Copies([dropout_cnn(s) for s in members], x, y, [copies[s] for s in members], 8,
                                    StopRule(max_epochs=3, patience=2), found)
        stack.train([n for n in names if n not in found[0]], epochs=1, multipliers=(1.0, 0.5, 1.0))  # block 1 fixed
        stack.train(names, rate_factor=0.5, multipliers=(0.25, 0.5, 1.0))  # then everything, until stopped
        return stack

    together = trained([0, 1, 2])
    for s in range(3):
        alone = trained([s])
        assert strip(together.histories[s].rows) == strip(alone.histories[0].rows)
        assert len(together.histories[s].rows) == 3
        for a, b in zip(together.best_weights(s), alone.best_weights(0), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(together.best_weights(0)[0], together.best_weights(1)[0])  # the copies did differ


# ---- 5. every strategy runs on a CNN, its parameter counts following its frozen blocks ---------------------------

CNN_VARIANTS = {
    "scratch": variant("scratch", reuse_layers=3),
    "reuse": variant("reuse", reuse_layers=2, new_hidden=[6]),
    "freeze": variant("freeze", reuse_layers=2, frozen_layers=1),
    "cache": variant("cache", reuse_layers=1, frozen_layers=1, new_hidden=[6]),  # a spatial cut: pooled above it
    "unfreeze": variant("unfreeze", reuse_layers=3, frozen_layers=2,
                        unfreeze=UnfreezeSpec(frozen_epochs=1, unfreeze_top=1, rate_factor=0.5)),
    "lp_ft": variant("lp_ft", reuse_layers=3),
    "surgical": variant("surgical", reuse_layers=3, train_layers=[2, 2]),
    "discriminative": variant("discriminative", reuse_layers=3, layer_decay=0.5),
    "continue": variant("continue", reuse_layers=3),
}


def test_the_cnn_variants_cover_every_strategy() -> None:
    assert set(CNN_VARIANTS) == set(strategies.STRATEGIES)


@pytest.mark.parametrize("name", sorted(CNN_VARIANTS))
def test_every_strategy_runs_on_a_cnn(name: str, source, arrays) -> None:
    spec = CNN_VARIANTS[name]
    protocol = PROTOCOL.model_copy(update={"grid": GRID[1:]})
    outcome = race.race(spec, source, NETWORK, protocol, arrays, LABELS, PLAN[:1])
    result, = outcome.results
    assert np.isfinite(result.target_loss) and 0 <= result.target_accuracy <= 1 and np.isfinite(result.val_loss)
    model, found = race.build_variant_network(spec, source, NETWORK, 3, PLAN[0].seed)
    fixed = {layer for index in strategies.kept_fixed(spec) for layer in found[index - 1]}
    source_blocks = model_blocks.blocks(source)
    frozen = sum(source_blocks[index - 1].parameters for index in strategies.kept_fixed(spec))  # every weight, statistics too
    statistics = sum(2 * int(layer.gamma.shape[0]) for layer in model.layers
                     if isinstance(layer, layers.BatchNormalization) and layer.name not in fixed)
    assert (outcome.trainable_params, outcome.frozen_params) == (model.count_params() - frozen - statistics, frozen)
    assert bool(frozen) == (strategies.STRATEGIES[name].frozen == "some" or name == "surgical")
    for layer in outcome.models[0].layers:  # the fixed blocks hold the init model's weights after training
        if layer.name in fixed and layer.weights and spec.strategy != "unfreeze":
            for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights(), strict=True):
                np.testing.assert_array_equal(a, b, err_msg=layer.name)


# ---- 6. a frozen block's Dropout is off while the blocks above it train -------------------------------------------

def frozen_dropout_cnn(rate: float | None) -> keras.Model:
    """Block 1 (conv1 … pool1) with a Dropout of `rate` (None: none), then a conv block and a Dense head."""
    inputs = keras.Input(SHAPE, name="pixels")
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer=keras.initializers.HeNormal(1), name="conv1")(inputs)
    x = layers.ReLU(name="act1")(layers.BatchNormalization(name="bn1")(x))
    if rate is not None:
        x = layers.Dropout(rate, seed=7, name="drop1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer=keras.initializers.HeNormal(2), name="conv2")(x)
    x = layers.ReLU(name="act2")(layers.BatchNormalization(name="bn2")(x))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", kernel_initializer=keras.initializers.HeNormal(3), name="outputs")(x)
    return with_statistics(keras.Model(inputs, outputs), seed=8)


@pytest.mark.parametrize("train_bn", [False, True])
def test_a_frozen_blocks_dropout_is_off_while_the_blocks_above_train(train_bn: bool, arrays) -> None:
    """Dropout(0.99) in the frozen block 1 would zero 99 % of its outputs and scale the rest 100-fold, were it on:
    off (inference mode), the layer is the identity, so the run equals, bit for bit, the run without it."""
    x, y = arrays["x_pool"], arrays["y_pool"]
    copy = engine.Copy(np.arange(36), np.arange(36, 45), 3, OptimizerSpec(name="adam", learning_rate=0.01))
    runs = []
    for rate in (0.99, None):
        model = frozen_dropout_cnn(rate)
        found = [b.layers for b in model_blocks.blocks(model)]
        assert ("drop1" in found[0]) == (rate is not None)
        stack = keras_copies.Copies([model], x, y, [copy], 8, StopRule(max_epochs=3, patience=None), found, train_bn)
        stack.train([name for block in found[1:] for name in block])
        stack.restore(0, model)
        runs.append((strip(stack.histories[0].rows), {k: v for k, v in values(model).items() if "seed_generator" not in k}))
    (with_dropout, weights), (without, reference) = runs
    assert with_dropout == without
    assert weights.keys() == reference.keys()
    for name, value in weights.items():
        np.testing.assert_array_equal(value, reference[name], err_msg=name)
    moved = not np.array_equal(weights["bn1/moving_mean"], frozen_dropout_cnn(None).get_layer("bn1").moving_mean)
    assert moved == train_bn  # train_bn: the frozen normalization did train (in training mode), the Dropout stayed off
