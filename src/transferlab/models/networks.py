"""Build dense networks from a spec and operate on them: copy layers by name, freeze.

A network reads images (H, W, C) and flattens them itself (a `Flatten` layer named `flatten` after
the input): the Dense stack's arithmetic is that of a flat input, and the data stay images.

Layer names are the contract between stages: hidden layers are `hidden1 … hiddenN` (lowest
first), layers added on top of reused ones `new_hidden1 …`, and the classifier `outputs`.
Each layer's initializer is seeded from (seed, layer name), so two networks built with the same
seed start from the same weights whatever else they contain — which is what lets `cache` and
`freeze` be compared weight for weight.

`check_supported` is the boundary every model that enters the project passes (`zoo.load_keras`,
the importers, pretraining outputs, registry fetches): a chain of such Dense layers
(`is_dense_chain`) runs on the stacked Dense engine, any other model of built-in Keras layers on
Keras' own layers (`training/keras_copies.py`, blocks from `models/blocks.py`, networks from
`models/surgery.py`); anything else is refused with one line.
"""
from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from transferlab.config import ModelFile
from transferlab.data.repetitions import derived_seed
from transferlab.errors import ModelError
from transferlab.models import blocks

OUTPUT = "outputs"
SCORE = "score"  # the auxiliary ranking pretraining's one linear unit, on top of its hidden layers
HEADS = {OUTPUT: "softmax", SCORE: "linear"}  # the layer a stack may end with, and its activation
# the hidden activations params may name (a model file's hidden layers, the widest list)
HIDDEN_ACTIVATIONS = typing.get_args(ModelFile.model_fields["activation"].annotation)
SUPPORTED = ("supported: a Keras model of built-in layers (Sequential or Functional, one input and one output, each layer "
             "applied once), no custom classes or Lambda layers")


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


def parameter_counts(model: keras.Model) -> tuple[int, int]:
    """(trainable, frozen) parameter counts: the trainable weights, and every weight of the layers kept fixed.

    A trained BatchNormalization's moving statistics are state, counted in neither."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for layer in model.layers if not layer.trainable for w in layer.weights))
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


def check_supported(model: keras.Model, origin: Path | str) -> None:
    """Refuse, in one line naming `origin` and the layer, any model the engines cannot run exactly.

    A chain of Dense layers named as the project names them runs on the stacked Dense engine
    (`training/engine.py`); any other model of built-in Keras layers runs on Keras' own layers
    (`training/keras_copies.py`), cut into blocks (`models/blocks.py`). Refused: a layer whose code
    is not Keras' own (a custom class, a subclass of a built-in one, a `Lambda`), and a graph that
    cannot be cut into blocks (several inputs or outputs, a layer applied twice).
    """
    if is_dense_chain(model):
        return
    for layer in model.layers:
        if type(layer).__module__.split(".")[0] != "keras" or type(layer) is keras.layers.Lambda:
            raise ModelError(f"{origin}: layer {layer.name} ({type(layer).__name__}) is not a built-in Keras layer; {SUPPORTED}")
    try:
        blocks.blocks(model)
    except ModelError as error:
        raise ModelError(f"{origin}: {str(error).removeprefix(f'model {model.name}: ')}; {SUPPORTED}") from None


def is_dense_chain(model: keras.Model) -> bool:
    """Whether `model` is a chain of the project's Dense layers, which the stacked Dense engine runs (its fast path)."""
    return _unsupported(model) is None


def _unsupported(model: keras.Model) -> str | None:
    """Why the engine cannot run `model` exactly (the lowest offending layer first), or None."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):  # a Sequential saved before it saw an input
        return "not built (no input shape)"
    if len(inputs) != 1 or len(outputs) != 1:
        return f"not a chain: {len(inputs)} inputs and {len(outputs)} outputs"
    layers = [layer for layer in model.layers if type(layer) is not keras.layers.InputLayer]
    # a Sequential is a chain by construction; a Functional model's graph is walked (branches named first)
    if not isinstance(model, keras.Sequential) and (problem := _not_a_chain(model, layers)):
        return problem
    for position, layer in enumerate(layers):
        # exact classes: a subclass of Dense may change its arithmetic, and would still pass isinstance
        if type(layer) in (keras.layers.Flatten, keras.layers.Reshape):
            if problem := _unsupported_flatten(layer, position):
                return f"layer {layer.name} ({type(layer).__name__}): {problem}"
        elif type(layer) is not keras.layers.Dense:
            return f"layer {layer.name} ({type(layer).__name__}): not a Dense layer, the engine would skip it"
    dense = [layer for layer in layers if type(layer) is keras.layers.Dense]
    if len(model.input_shape) > 2 and (not layers or type(layers[0]) is keras.layers.Dense):
        return f"input of shape {tuple(model.input_shape[1:])} is not flattened before {dense[0].name if dense else 'the output'}"
    return _unsupported_dense(dense)


def _unsupported_flatten(layer: keras.layers.Layer, position: int) -> str | None:
    if position != 0:
        return "flattens between layers; the engine flattens only the input"
    if type(layer) is keras.layers.Flatten and layer.data_format != "channels_last":
        return f"flattens {layer.data_format}, the engine flattens channels_last"
    if type(layer) is keras.layers.Reshape and len(layer.target_shape) != 1:
        return f"reshapes to {layer.target_shape}, not to one flat axis"
    return None


def _not_a_chain(model: keras.Model, layers: list[keras.layers.Layer]) -> str | None:
    """Walk from the output down to the input: a chain passes each layer once, one tensor at a time, in order."""
    path, tensor = [], model.outputs[0]
    while tensor is not model.inputs[0]:
        try:  # Keras' own record of the layer call that made this tensor (the graph Functional models keep)
            operation, node_index, _ = tensor._keras_history
            node = operation._inbound_nodes[node_index]
        except (AttributeError, IndexError, TypeError):
            return "not a chain: its graph cannot be followed from the output to the input"
        if len(node.input_tensors) != 1:
            return f"layer {operation.name} ({type(operation).__name__}): not a chain, it reads {len(node.input_tensors)} tensors"
        path.append(operation)
        tensor = node.input_tensors[0]
    path.reverse()
    for layer in path:
        if (calls := sum(other is layer for other in path)) > 1:
            return f"layer {layer.name} ({type(layer).__name__}): not a chain, the layer is applied {calls} times"
    if [id(layer) for layer in path] != [id(layer) for layer in layers]:
        return "not a chain: its layers are not one path from the input to the output"
    return None


def _unsupported_dense(dense: list[keras.layers.Dense]) -> str | None:
    """The Dense layers' names in the order the stages count them, each a kernel and a bias, its activation one the project builds."""
    hidden = new = 0
    for position, layer in enumerate(dense):
        where = f"layer {layer.name} (Dense)"
        name, activation = layer.name, keras.activations.serialize(layer.activation)
        if name == hidden_name(hidden + 1) and new == 0:
            hidden += 1
        elif name == f"new_hidden{new + 1}":  # on reused layers, or alone (a network of new layers: scratch at k = 0)
            new += 1
        elif name in HEADS and position == len(dense) - 1:
            if activation != HEADS[name]:
                return f"{where}: activation {activation!r}, where {name} is {HEADS[name]}"
        else:
            expected = " or ".join(n for n in (hidden_name(hidden + 1) if not new else "", f"new_hidden{new + 1}",
                                               *HEADS) if n)
            return f"{where}: expected {expected} here (Dense layers are hidden1 … hiddenN, new_hidden1 …, then the head, in order)"
        if name not in HEADS and activation not in HIDDEN_ACTIVATIONS:
            return f"{where}: activation {activation!r} (hidden layers use {', '.join(HIDDEN_ACTIVATIONS)})"
        if not layer.use_bias:
            return f"{where}: has no bias"
        extras = [key for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                                  "bias_constraint") if getattr(layer, key, None) is not None]
        if extras:
            return f"{where}: has a {extras[0]}, which the engine does not apply"
        if len(layer.weights) != 2 or layer.compute_dtype != "float32":  # LoRA, quantized, mixed precision
            return f"{where}: {len(layer.weights)} {layer.compute_dtype} weights, where the engine runs a float32 kernel and bias"
    return None
