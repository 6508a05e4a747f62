"""The source networks params can declare (`sources.<name>.network`): a Dense stack, or a small CNN.

The CNN: per entry of `conv`, a 3x3 `Conv2D` of stride 2 (it halves the image: a quarter of the
arithmetic of a stride-1 convolution and max pooling; no bias, the BatchNormalization after it has
one), `BatchNormalization` and the activation; then global average pooling, the Dense layers
`hidden1 …` and the softmax `outputs`. Layers are named `conv1`, `bn1`, `act1`, …, `gap`;
its blocks (`models/blocks.py`) are the conv blocks (the pooling joins the last), then each Dense
layer: what `reuse_layers` counts. Each initializer is seeded from (seed, layer name), as in
`networks.dense`.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras

from transferlab.config import NetworkSpec
from transferlab.models import networks


def cnn(input_shape: Sequence[int], conv: Sequence[int], hidden_units: Sequence[int], activation: str, initializer: str,
        n_classes: int, seed: int) -> keras.Model:
    inputs = keras.Input(shape=tuple(int(d) for d in input_shape), name="pixels")
    x = inputs
    for i, filters in enumerate(conv, start=1):
        init = keras.initializers.get({"class_name": initializer, "config": {"seed": networks.layer_seed(seed, f"conv{i}")}})
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, kernel_initializer=init,
                                name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation(activation, name=f"act{i}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    for spec in networks.dnn_layers(hidden_units, activation, n_classes):
        x = networks.dense(spec, initializer, seed)(x)
    return keras.Model(inputs, x, name="cnn")


def source_network(network: NetworkSpec, input_shape: Sequence[int], n_classes: int, seed: int) -> keras.Model:
    """The network `sources.<name>.network` declares, freshly initialised from `seed`."""
    if network.conv:
        return cnn(input_shape, network.conv, network.hidden_units, network.activation, network.initializer, n_classes, seed)
    return networks.build(input_shape, networks.dnn_layers(network.hidden_units, network.activation, n_classes),
                          network.initializer, seed)
