"""Transfer strategies: a few lines of network surgery each, then the one `training.fit`.

A strategy is chosen by name from `STRATEGIES`; every one of them receives the same inputs
and returns a `Outcome`, so stages, sweeps and tests treat them alike.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras

from transferlab import networks, training
from transferlab.config import NetworkSpec, TrainSpec, VariantSpec
from transferlab.data import TargetData
from transferlab.training import EpochCallback, History


@dataclass
class Outcome:
    model: keras.Model
    history: History
    trainable_params: int
    frozen_params: int
    test_loss: float
    test_accuracy: float
    cache_seconds: float = 0.0  # `cache` only: the one forward pass through the frozen layers

    @property
    def train_seconds(self) -> float:
        return self.history.train_seconds + self.cache_seconds


def build_variant_network(
    variant: VariantSpec, init_model: keras.Model, network: NetworkSpec, n_classes: int, seed: int
) -> keras.Model:
    """The variant's network: reused layers (copied unless `scratch`), new layers, a new output; lowest layers frozen."""
    layers = networks.target_layers(init_model, variant.reuse_layers, variant.new_hidden, network.activation, n_classes)
    model = networks.build(networks.input_size(init_model), layers, network.initializer, seed)
    if variant.strategy != "scratch":
        networks.copy_weights(init_model, model, [networks.hidden_name(i + 1) for i in range(variant.reuse_layers)])
    networks.freeze_lowest(model, variant.frozen_layers)
    return model


def _finish(model: keras.Model, history: History, data: TargetData, cache_seconds: float = 0.0) -> Outcome:
    trainable, frozen = networks.parameter_counts(model)
    scores = training.evaluate(model, data.x_test, data.y_test)
    return Outcome(model, history, trainable, frozen, scores["loss"], scores["accuracy"], cache_seconds)


def train_all(model: keras.Model, variant: VariantSpec, train: TrainSpec, data: TargetData, on_epoch: EpochCallback | None) -> Outcome:
    """`scratch`, `reuse`, `freeze`: one phase; the frozen layers (if any) are excluded from training."""
    history = training.fit(model, data.x_train, data.y_train, train, eval_data=(data.x_test, data.y_test), on_epoch=on_epoch)
    return _finish(model, history, data)


def train_cached(model: keras.Model, variant: VariantSpec, train: TrainSpec, data: TargetData, on_epoch: EpochCallback | None) -> Outcome:
    """`cache`: run the frozen layers once over the data, train the upper layers on their outputs."""
    lower, upper = networks.split_at(model, variant.frozen_layers)
    start = time.perf_counter()
    features_train = training.predict(lower, data.x_train)
    cache_seconds = time.perf_counter() - start
    features_test = training.predict(lower, data.x_test)
    history = training.fit(upper, features_train, data.y_train, train, eval_data=(features_test, data.y_test), on_epoch=on_epoch)
    return _finish(model, history, data, cache_seconds)


def train_unfreezing(model: keras.Model, variant: VariantSpec, train: TrainSpec, data: TargetData, on_epoch: EpochCallback | None) -> Outcome:
    """`unfreeze`: train with `frozen_layers` fixed, then unfreeze the top `unfreeze_top` and go on at a smaller rate."""
    assert variant.unfreeze is not None  # guaranteed by config validation
    phase = variant.unfreeze
    evaluation = (data.x_test, data.y_test)
    first = training.fit(model, data.x_train, data.y_train, train, epochs=phase.frozen_epochs, eval_data=evaluation, on_epoch=on_epoch)
    networks.freeze_lowest(model, variant.frozen_layers - phase.unfreeze_top)
    second = training.fit(
        model,
        data.x_train,
        data.y_train,
        train,
        epochs=train.epochs - phase.frozen_epochs,
        first_epoch=phase.frozen_epochs + 1,
        learning_rate=phase.learning_rate,
        eval_data=evaluation,
        on_epoch=on_epoch,
    )
    return _finish(model, first.extend(second), data)


Strategy = Callable[[keras.Model, VariantSpec, TrainSpec, TargetData, EpochCallback | None], Outcome]
STRATEGIES: dict[str, Strategy] = {
    "scratch": train_all,
    "reuse": train_all,
    "freeze": train_all,
    "cache": train_cached,
    "unfreeze": train_unfreezing,
}


def run_variant(
    variant: VariantSpec,
    init_model: keras.Model,
    network: NetworkSpec,
    train: TrainSpec,
    data: TargetData,
    on_epoch: EpochCallback | None = None,
) -> Outcome:
    """Build the variant's network (new layers seeded by `train.seed`) and train it with its strategy."""
    model = build_variant_network(variant, init_model, network, data.n_classes, train.seed)
    return STRATEGIES[variant.strategy](model, variant, train, data, on_epoch)
