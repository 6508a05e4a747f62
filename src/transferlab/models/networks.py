"""Build dense networks from a spec and operate on them: copy layers by name, freeze, cut.

A network reads images (H, W, C) and flattens them itself (a `Flatten` layer named `flatten` after
the input): the Dense stack's arithmetic is that of a flat input, and the data stay images.

Layer names are the contract between stages: hidden layers are `hidden1 … hiddenN` (lowest
first), layers added on top of reused ones `new_hidden1 …`, and the classifier `outputs`.
Each layer's initializer is seeded from (seed, layer name), so two networks built with the same
seed start from the same weights whatever else they contain — which is what lets `cache` and
`freeze` be compared weight for weight.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from transferlab.data.repetitions import derived_seed
from transferlab.errors import ModelError

OUTPUT = "outputs"


def hidden_name(index: int) -> str:
    """Name of the `index`-th (1-based) hidden layer."""
    return f"hidden{index}"


layer_seed = derived_seed  # a layer's initializer seed, from (seed, layer name)


@dataclass(frozen=True)
class LayerSpec:
    name: str
    units: int
    activation: str


def dense(spec: LayerSpec, initializer: str, seed: int) -> keras.layers.Dense:
    init = keras.initializers.get({"class_name": initializer, "config": {"seed": layer_seed(seed, spec.name)}})
    return keras.layers.Dense(spec.units, activation=spec.activation, kernel_initializer=init, name=spec.name)


def build(input_shape: int | Sequence[int], layers: Sequence[LayerSpec], initializer: str, seed: int) -> keras.Model:
    """A functional stack of Dense layers, in order, on an input of `input_shape`: images (H, W, C),
    flattened inside the model, or a number of features (a flat input, as features cached or imported)."""
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
    inputs = keras.Input(shape=shape, name="pixels")
    x = inputs if len(shape) == 1 else keras.layers.Flatten(name="flatten")(inputs)
    for spec in layers:
        x = dense(spec, initializer, seed)(x)
    return keras.Model(inputs, x, name="dnn")


def dnn_layers(hidden_units: Sequence[int], activation: str, n_classes: int) -> list[LayerSpec]:
    """The source-network architecture: hidden1 … hiddenN, then a softmax `outputs` layer."""
    hidden = [LayerSpec(hidden_name(i + 1), units, activation) for i, units in enumerate(hidden_units)]
    return [*hidden, LayerSpec(OUTPUT, n_classes, "softmax")]


def hidden_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """The model's `hiddenK` layers, lowest first."""
    found, index = [], 1
    names = {layer.name for layer in model.layers}
    while hidden_name(index) in names:
        found.append(model.get_layer(hidden_name(index)))
        index += 1
    return found


def input_size(model: keras.Model) -> int:
    """How many values one input holds (H * W * C for an image input): what the lowest Dense layer reads."""
    return int(np.prod([int(d) for d in model.input_shape[1:]]))


def input_shape(model: keras.Model) -> tuple[int, ...]:
    """One input's shape: (H, W, C), or (features,) for a flat input."""
    return tuple(int(d) for d in model.input_shape[1:])


def target_layers(
    init_model: keras.Model, reuse_layers: int, new_hidden: Sequence[int], activation: str, n_classes: int
) -> list[LayerSpec]:
    """The lowest `reuse_layers` hidden layers of `init_model` (same sizes and activations), the new ones, a new output."""
    source = hidden_layers(init_model)
    if reuse_layers > len(source):
        raise ModelError(f"init model has {len(source)} hidden layers, cannot reuse {reuse_layers}")
    reused = [
        LayerSpec(layer.name, int(layer.units), keras.activations.serialize(layer.activation)) for layer in source[:reuse_layers]
    ]
    new = [LayerSpec(f"new_hidden{i + 1}", units, activation) for i, units in enumerate(new_hidden)]
    return [*reused, *new, LayerSpec(OUTPUT, n_classes, "softmax")]


def copy_weights(source: keras.Model, target: keras.Model, names: Sequence[str]) -> None:
    """Copy the weights of the named layers from `source` into `target` (shapes must agree)."""
    for name in names:
        src, dst = source.get_layer(name), target.get_layer(name)
        for have, want in zip(src.get_weights(), dst.get_weights(), strict=True):
            if have.shape != want.shape:
                raise ModelError(f"{name}: weight shape {have.shape} vs expected {want.shape}")
        dst.set_weights(src.get_weights())


def freeze(model: keras.Model, fixed: Iterable[int]) -> None:
    """Make the hidden layers numbered `fixed` (hidden1 is 1) fixed and every other layer trainable (recompile afterwards)."""
    frozen = {hidden_name(i) for i in fixed}
    for layer in model.layers:
        layer.trainable = layer.name not in frozen


def split_at(model: keras.Model, frozen_layers: int) -> tuple[keras.Model, keras.Model]:
    """Cut a stack after hidden{frozen_layers}: a lower model and an upper model sharing the layers' weights."""
    dense_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    cut = next(i for i, layer in enumerate(dense_layers) if layer.name == hidden_name(frozen_layers)) + 1
    lower = keras.Model(model.inputs, dense_layers[cut - 1].output, name="frozen_lower")
    upper_in = keras.Input(shape=(int(dense_layers[cut - 1].units),), name="cached_features")
    x = upper_in
    for layer in dense_layers[cut:]:
        x = layer(x)
    return lower, keras.Model(upper_in, x, name="trained_upper")


def parameter_counts(model: keras.Model) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return trainable, frozen


def as_init_model(model: keras.Model) -> keras.Model:
    """A copy of a trained stack whose hidden layers are named `hidden1 …` (lowest first): a model to reuse layers from.

    A network trained from scratch on the target has `new_hidden1 …` layers; renamed, it is the
    selffer network B of Yosinski et al. 2014, whose lowest k layers a sweep point reuses as it
    reuses the source's. Weights and activations are copied exactly; `model` is left as it is.
    """
    stack = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    specs = [LayerSpec(hidden_name(i + 1), int(layer.units), keras.activations.serialize(layer.activation))
             for i, layer in enumerate(stack[:-1])]
    specs.append(LayerSpec(OUTPUT, int(stack[-1].units), keras.activations.serialize(stack[-1].activation)))
    copy = build(input_shape(model), specs, "glorot_uniform", seed=0)  # every weight is overwritten below
    for layer, spec in zip(stack, specs, strict=True):
        copy.get_layer(spec.name).set_weights(layer.get_weights())
    return copy
