"""FLOPs of one copy-epoch of the race, counted from the network actually trained.

A copy-epoch is one copy's pass over its training rows (forward, backward, update) plus its
validation pass. Only the multiply-adds of the weighted layers are counted (Dense, Conv1D/2D/3D,
DepthwiseConv2D, SeparableConv2D), at 2 FLOPs each (biases, activations, normalization, pooling,
the loss and the optimizer's element-wise update are O(activations or weights), not O(weights x
positions)). Per example, a layer's multiply-adds are positions x window x inputs x units / groups,
read from its kernel and its output shape: a Dense layer on vectors is 1 x 1 x inputs x units; a
Conv2D is (output height x width) x (kernel height x width) x input channels x filters; a depthwise
convolution is a convolution with one group per input channel, and a SeparableConv2D counts as its
depthwise part followed by its 1 x 1 pointwise part. Each such layer costs:

- forward: 2 x its multiply-adds, for every layer, trained or not (a frozen layer still runs);
- weight gradient: 2 x its multiply-adds (a convolution's too), for a trained layer only;
- input gradient: 2 x its multiply-adds (a convolution's: the transposed one), only above the lowest trained layer (the gradient must
  flow down to it); the lowest trained layer's input gradient is never computed, nor anything
  of the frozen layers below it but their forward pass;
- validation: the forward pass again, over the validation rows.

A cached variant (`cache`) trains its upper layers on the fixed layers' outputs computed once for
the whole pool: its copy-epoch is the upper network's, and the one-off pass is `cache_flops`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import keras


@dataclass(frozen=True)
class Layer:
    """One weighted layer (a Dense layer unless told): its kernel's shape and whether this phase trains it."""

    inputs: int  # input features or channels
    units: int  # output units or channels
    trained: bool
    positions: int = 1  # where the kernel is applied, per example: a convolution's output height x width
    window: int = 1  # a convolution's kernel height x width
    groups: int = 1  # a grouped or depthwise convolution's groups (each output channel sees inputs / groups channels)
    name: str = ""

    @property
    def multiply_adds(self) -> int:
        return self.positions * self.window * self.inputs * self.units // self.groups


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
    """The weighted layers of a built Keras model (a nested model's included), bottom first, each trained iff `trainable`.

    Dense layers come from their kernel (and, when applied per position of a sequence or image, their
    output shape); convolutions from their kernel and output shape. Other layers have no matmul to count.
    """
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += [x if layer.trainable else replace(x, trained=False) for x in model_layers(layer)]
        elif isinstance(layer, keras.layers.Dense):
            positions = math.prod(int(d) for d in layer.output.shape[1:-1])
            found.append(Layer(int(layer.kernel.shape[0]), int(layer.kernel.shape[1]), bool(layer.trainable), positions,
                               name=layer.name))
        elif isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
            depthwise, positions = tuple(layer.depthwise_kernel.shape), _positions(layer)
            window, channels, multiplier = math.prod(depthwise[:-2]), int(depthwise[-2]), int(depthwise[-1])
            found += [Layer(channels, channels * multiplier, bool(layer.trainable), positions, window, channels,
                            f"{layer.name}/depthwise"),
                      Layer(channels * multiplier, int(layer.pointwise_kernel.shape[-1]), bool(layer.trainable), positions,
                            name=f"{layer.name}/pointwise")]
        elif isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
            kernel = tuple(layer.kernel.shape)  # (window..., channels, multiplier)
            found.append(Layer(int(kernel[-2]), int(kernel[-2] * kernel[-1]), bool(layer.trainable), _positions(layer),
                               math.prod(kernel[:-2]), int(kernel[-2]), layer.name))
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            kernel = tuple(layer.kernel.shape)  # (window..., input channels / groups, filters)
            groups = int(getattr(layer, "groups", 1) or 1)
            found.append(Layer(int(kernel[-2]) * groups, int(kernel[-1]), bool(layer.trainable), _positions(layer),
                               math.prod(kernel[:-2]), groups, layer.name))
    return found


def _positions(layer: keras.layers.Layer) -> int:
    """Where a convolution applies its kernel per example: its output's spatial size."""
    shape = layer.output.shape
    return math.prod(int(d) for d in (shape[2:] if getattr(layer, "data_format", None) == "channels_first" else shape[1:-1]))


def cache_flops(layers: Sequence[Layer], fixed: int, pool_rows: int) -> int:
    """The one-off forward pass of the lowest `fixed` layers over the pool, shared by every copy of a cached race."""
    return sum(2 * layer.multiply_adds for layer in layers[:fixed]) * pool_rows
