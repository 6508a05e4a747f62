"""FLOPs of one copy-epoch of the race, counted from the network actually trained.

A copy-epoch is one copy's pass over its training rows (forward, backward, update) plus its
validation pass. Only the dense layers' matmuls are counted, at 2 FLOPs per multiply-add (biases,
activations, the loss and the optimizer's element-wise update are O(units), not O(weights)).
Per example, a dense layer of `inputs` x `units` weights costs:

- forward: 2 x inputs x units, for every layer, trained or not (a frozen layer still runs);
- weight gradient: 2 x inputs x units, for a trained layer only;
- input gradient: 2 x inputs x units, only above the lowest trained layer (the gradient must
  flow down to it); the lowest trained layer's input gradient is never computed, nor anything
  of the frozen layers below it but their forward pass;
- validation: the forward pass again, over the validation rows.

A cached variant (`cache`) trains its upper layers on the fixed layers' outputs computed once for
the whole pool: its copy-epoch is the upper network's, and the one-off pass is `cache_flops`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class Layer:
    """One dense layer: its kernel's shape and whether this phase trains it."""

    inputs: int
    units: int
    trained: bool

    @property
    def multiply_adds(self) -> int:
        return self.inputs * self.units


@dataclass(frozen=True)
class EpochFlops:
    """FLOPs of one copy-epoch, by part."""

    forward: int  # training rows, every layer
    backward: int  # training rows: weight gradients of trained layers, input gradients above the lowest trained
    validation: int  # validation rows, forward only

    @property
    def training(self) -> int:
        return self.forward + self.backward

    @property
    def total(self) -> int:
        return self.forward + self.backward + self.validation


def epoch_flops(layers: Sequence[Layer], train_rows: int, val_rows: int) -> EpochFlops:
    """The FLOPs of one copy-epoch of a network (dense layers bottom first) on `train_rows` + `val_rows` rows."""
    lowest_trained = next((i for i, layer in enumerate(layers) if layer.trained), len(layers))
    forward = sum(2 * layer.multiply_adds for layer in layers)
    backward = 0
    for i, layer in enumerate(layers):
        if layer.trained:
            backward += 2 * layer.multiply_adds  # dL/dW
        if i > lowest_trained:
            backward += 2 * layer.multiply_adds  # dL/dx: the gradient still has a trained layer below to reach
    return EpochFlops(forward=forward * train_rows, backward=backward * train_rows, validation=forward * val_rows)


def model_layers(model: keras.Model) -> list[Layer]:
    """The dense layers of a built Keras model, bottom first, each trained iff its layer is `trainable`."""
    return [Layer(int(layer.kernel.shape[0]), int(layer.kernel.shape[1]), bool(layer.trainable))
            for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def cache_flops(layers: Sequence[Layer], fixed: int, pool_rows: int) -> int:
    """The one-off forward pass of the lowest `fixed` layers over the pool, shared by every copy of a cached race."""
    return sum(2 * layer.multiply_adds for layer in layers[:fixed]) * pool_rows
