"""A variant's network from any Keras model: its lowest k blocks, copied or re-initialised, under a new head.

The init model is cut after its block k (`blocks.blocks`: found at single-tensor cuts, or declared by
layer-name patterns); its last block is its head, which transfer always replaces (unless the
strategy keeps the output: `continue`). The lower part is cloned layer for layer, names kept, each
initializer (and Dropout seed) re-seeded from (seed, layer name) as `networks.dense` seeds a Dense
layer, so `scratch` repetitions differ and `freeze` and `cache` start from the same weights; unless
the variant is `scratch`, every weight and BatchNormalization statistic is then copied from the init
model. Above the cut: global average pooling where the cut is spatial (a flat input is flattened),
the variant's `new_hidden1 …` Dense layers and a new softmax `outputs`.

The network comes with its blocks (each block's layer names, lowest first): reused blocks as in the
init model, the pooling joined to the block below it, each new Dense layer a block, the head last.
Dense stacks keep their own builder (`networks.build`), whose blocks are its Dense layers.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras

from transferlab.data.repetitions import derived_seed
from transferlab.errors import ModelError
from transferlab.models import blocks as model_blocks
from transferlab.models import networks

Blocks = list[tuple[str, ...]]
POOL = "new_pool"


def _reseeded(seed: int):
    """A `clone_model` clone function: the same layer, each random initializer and seed drawn from (seed, layer name)."""
    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        for key, value in config.items():
            if key.endswith("initializer") and isinstance(value, dict) and "seed" in value.get("config", {}):
                value["config"]["seed"] = derived_seed(seed, f"{layer.name}/{key}")
        if "seed" in config:  # Dropout and other random layers
            config["seed"] = derived_seed(seed, f"{layer.name}/seed")
        return layer.__class__.from_config(config)
    return clone


def variant_network(init: keras.Model, reuse: int, new_hidden: Sequence[int], activation: str, initializer: str,
                    n_classes: int, seed: int, *, copy: bool, keep_output: bool = False,
                    patterns: Sequence[str] | None = None) -> tuple[keras.Model, Blocks]:
    """(network, its blocks): `init`'s lowest `reuse` blocks (weights copied when `copy`), new layers, a new output."""
    found = model_blocks.blocks(init, patterns)
    hidden = found[:-1]
    if reuse > len(hidden):
        raise ModelError(f"init model {init.name} has {len(hidden)} blocks below its output block, cannot reuse {reuse}")
    if keep_output:
        if reuse != len(hidden) or new_hidden:
            raise ModelError(f"init model {init.name}: keeping its output means reusing all {len(hidden)} blocks and no new layers")
        if int(init.output_shape[-1]) != n_classes:
            raise ModelError(f"init model {init.name} has {init.output_shape[-1]} outputs, the target {n_classes} classes")
        model = keras.models.clone_model(init, clone_function=_reseeded(seed))
        if copy:
            model.set_weights(init.get_weights())
        return model, [tuple(block.layers) for block in found]
    inputs = keras.Input(shape=tuple(int(d) for d in init.input_shape[1:]), name="pixels")
    kept: Blocks = [tuple(block.layers) for block in hidden[:reuse]]
    if reuse:
        lower = keras.Model(init.inputs[0], hidden[reuse - 1].output, name="reused")
        clone = keras.models.clone_model(lower, input_tensors=inputs, clone_function=_reseeded(seed))
        if copy:
            clone.set_weights(lower.get_weights())
        x = clone.outputs[0]
    else:
        x = inputs
    if len(x.shape) > 2:  # a spatial cut (or the image itself): pooled, or flattened when nothing is reused
        pool = (keras.layers.GlobalAveragePooling2D(name=POOL) if len(x.shape) == 4 and reuse else
                keras.layers.GlobalAveragePooling1D(name=POOL) if len(x.shape) == 3 and reuse else
                keras.layers.Flatten(name=POOL))
        x = pool(x)
        leading = [POOL]
    else:
        leading = []
    specs = [networks.LayerSpec(f"new_hidden{i + 1}", units, activation) for i, units in enumerate(new_hidden)]
    specs.append(networks.LayerSpec(networks.OUTPUT, n_classes, "softmax"))
    new: Blocks = []
    for spec in specs:
        x = networks.dense(spec, initializer, seed)(x)
        new.append((spec.name,))
    if leading:  # the pooling has no weights of its own: it joins the block below it (or the first new one)
        if kept:
            kept[-1] = (*kept[-1], *leading)
        else:
            new[0] = (*leading, *new[0])
    return keras.Model(inputs, x, name="transfer"), kept + new


def freeze(model: keras.Model, blocks: Blocks, fixed: Sequence[int], train_bn: bool = False) -> None:
    """The blocks numbered `fixed` (1 is the lowest) non-trainable, every other layer trainable; with `train_bn`
    the fixed blocks' normalization layers train too (fastai's `train_bn`)."""
    frozen = {name for index in fixed for name in blocks[index - 1]}
    for layer in model.layers:
        layer.trainable = layer.name not in frozen or (train_bn and isinstance(layer, model_blocks.NORMALIZATION))


def split_after(model: keras.Model, blocks: Blocks, k: int) -> tuple[keras.Model, keras.Model, Blocks]:
    """(lower, upper, the upper's blocks): `model` cut after its block k, sharing its layers and weights."""
    cut = model.get_layer(blocks[k - 1][-1]).output
    return (keras.Model(model.inputs[0], cut, name="frozen_lower"), keras.Model(cut, model.outputs[0], name="trained_upper"),
            blocks[k:])
