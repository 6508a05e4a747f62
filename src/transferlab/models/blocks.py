"""Blocks: any Keras model as an ordered list of blocks, the unit a strategy reuses, freezes or trains.

A block ends at a *single-tensor cut*: a tensor of the graph through which every path from the
input to the output passes. No tensor inside a residual block is such a cut (the skip path passes
beside it), so a residual block, from its fork to its `Add`, always lies within one block.

Found (`blocks(model)`): the model is cut at every single-tensor cut, in topological order, and a
stretch between two cuts with no weights of its own, or only a normalization's (the
BatchNormalization after a convolution, an activation, pooling, dropout), joins the block below it;
such stretches before the first weighted layer (the `Flatten` after the input) join the first
block. So for a Dense stack each Dense layer is a block, `hidden1 … hiddenN` then `outputs`, and
`reuse_layers: k` keeps meaning the lowest k hidden layers; a CNN's block is a convolution with its
normalization and activation, or a whole residual block.

Declared (`blocks(model, patterns)`): one regular expression per block, lowest first (timm's
`group_matcher` idea), each matched against a layer's whole name; every layer in exactly one block
and each block ending at a single-tensor cut, or the model is refused with one line.

`split(model, k)` cuts a model at the end of block k into a lower and an upper model that share its
layers and weights: upper(lower(x)) is model(x). The race builds networks from blocks (`surgery.py`).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from transferlab.errors import ModelError

# layers that normalise what the layer below them computed: they belong to its block, never start one
NORMALIZATION = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)


@dataclass(frozen=True)
class Block:
    """One block of a model: its layers (lowest first), the layer whose output ends it, its size."""

    index: int  # 1 for the lowest block
    layers: tuple[str, ...]
    output_layer: str  # the layer that computes the cut tensor the block ends at
    parameters: int  # every weight, trainable or not (BatchNormalization's statistics too), as `count_params`
    output: keras.KerasTensor = field(compare=False, repr=False)  # the cut tensor, in the model's own graph


def blocks(model: keras.Model, patterns: Sequence[str] | None = None) -> list[Block]:
    """`model` (one input, one output, each layer applied once) as its blocks, lowest first.

    Args:
        patterns: one regular expression per block, lowest first, each matching the whole names of
            that block's layers; None finds the blocks at the graph's single-tensor cuts.
    """
    nodes, source, sink = _graph(model)
    cuts = _cuts(nodes, source, sink)
    groups = _found(nodes, cuts) if patterns is None else _declared(model, nodes, source, sink, patterns)
    found, start = [], 0
    for index, end in enumerate(groups, start=1):
        members = nodes[start:end]
        found.append(Block(index=index, layers=tuple(node.operation.name for node in members),
                           output_layer=members[-1].operation.name,
                           parameters=sum(_parameters(node.operation) for node in members), output=cuts[end - 1]))
        start = end
    return found


def split(model: keras.Model, k: int, blocks: Sequence[Block] | None = None) -> tuple[keras.Model, keras.Model]:
    """(lower, upper): `model` cut at the end of its block `k` (1 is the lowest), sharing its layers and weights.

    `blocks` are `model`'s own (from `blocks(model, …)`); None finds them. Keras 3 builds the upper
    model from the cut tensor itself (it clones the graph's nodes behind a new input), so nothing is
    rebuilt by hand and every layer, BatchNormalization included, keeps its weights and its mode.
    """
    found = list(_blocks(model) if blocks is None else blocks)
    if not 1 <= k < len(found):
        raise ModelError(f"model {model.name}: cannot split after block {k}; it has {len(found)} blocks, "
                         f"so a split comes after block 1 … {len(found) - 1}")
    cut = found[k - 1].output
    lower = keras.Model(model.inputs[0], cut, name=f"{model.name}_lower{k}")
    upper = keras.Model(cut, model.outputs[0], name=f"{model.name}_upper{k}")
    return lower, upper


_blocks = blocks  # `split`'s argument `blocks` hides the function's name inside it


def _graph(model: keras.Model) -> tuple[list, keras.KerasTensor, keras.KerasTensor]:
    """(the model's layer calls in topological order, its input, its output), walked from the output."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):  # a Sequential that has not seen an input
        raise ModelError(f"model {model.name}: not built (no input shape), so it has no graph to cut") from None
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"model {model.name}: {len(inputs)} inputs and {len(outputs)} outputs; blocks need one of each")
    source, sink = inputs[0], outputs[0]
    if sink is source:
        raise ModelError(f"model {model.name}: has no layers")
    # depth-first from the output, a node placed after every node it reads from (iterative: deep models)
    order, entered, stack = [], set(), [(_producer(model, sink), False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif id(node) not in entered:
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((_producer(model, tensor), False) for tensor in reversed(node.input_tensors) if tensor is not source)
    calls: dict[int, int] = {}
    for node in order:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        if calls[id(node.operation)] > 1:
            raise ModelError(f"model {model.name}: layer {node.operation.name} ({type(node.operation).__name__}) is applied "
                             "more than once (shared weights); blocks need each layer applied once")
    return order, source, sink


def _producer(model: keras.Model, tensor: keras.KerasTensor):
    """The node (one layer call) that computed `tensor`, from Keras' record of the graph."""
    history = getattr(tensor, "_keras_history", None)
    node = history.operation._inbound_nodes[history.node_index] if history and history.operation else None
    if node is None or node.is_input:
        raise ModelError(f"model {model.name}: tensor {getattr(tensor, 'name', tensor)} does not come from the model's input")
    return node


def _cuts(nodes: list, source: keras.KerasTensor, sink: keras.KerasTensor) -> dict[int, keras.KerasTensor]:
    """{position: tensor} for each node after which one tensor alone is still to be read: the single-tensor cuts.

    After a node, the tensors still to be read are those computed so far (or the input) that a later
    node reads. When that is one tensor, every path from the input to the output passes through it:
    any node is either computed before it from the input alone, or after it from it alone.
    """
    last_read = {id(sink): len(nodes)}  # the output is read by the caller, after every node
    for position, node in enumerate(nodes):
        for tensor in node.input_tensors:
            last_read[id(tensor)] = position
    live = {id(source): source}
    cuts = {}
    for position, node in enumerate(nodes):
        for tensor in node.input_tensors:
            if last_read[id(tensor)] == position:
                live.pop(id(tensor), None)
        for tensor in node.outputs:
            if last_read.get(id(tensor), -1) > position:
                live[id(tensor)] = tensor
        if len(live) == 1:
            cuts[position] = next(iter(live.values()))
    return cuts


def _found(nodes: list, cuts: dict[int, keras.KerasTensor]) -> list[int]:
    """Where the found blocks end (one past each one's last node): at cuts, each block led by a weighted layer."""
    ends, start, leading = [], 0, True
    for end in sorted(cuts):
        stretch = nodes[start:end + 1]
        stands = any(_parameters(node.operation) and not isinstance(node.operation, NORMALIZATION) for node in stretch)
        if stands and not leading:
            ends.append(end + 1)
        elif ends:  # no weights of its own: the block below takes it
            ends[-1] = end + 1
        else:  # before the first weighted layer (or that layer's own stretch): the first block
            ends.append(end + 1)
        leading = leading and not stands
        start = end + 1
    return ends


def _declared(model: keras.Model, nodes: list, source: keras.KerasTensor, sink: keras.KerasTensor,
              patterns: Sequence[str]) -> list[int]:
    """Where the declared blocks end, or a one-line refusal naming the layer or pattern."""
    compiled = []
    for number, pattern in enumerate(patterns, start=1):
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise ModelError(f"model {model.name}: block pattern {number} ({pattern!r}) is not a regular expression: {error}") from None
    owner = {}
    for node in nodes:
        name = node.operation.name
        matched = [number for number, regex in enumerate(compiled, start=1) if regex.fullmatch(name)]
        if not matched:
            raise ModelError(f"model {model.name}: layer {name} matches none of the block patterns {list(patterns)}")
        if len(matched) > 1:
            raise ModelError(f"model {model.name}: layer {name} matches block patterns {matched[0]} ({patterns[matched[0] - 1]!r}) "
                             f"and {matched[1]} ({patterns[matched[1] - 1]!r}); each layer belongs to one block")
        owner[id(node)] = matched[0]
    producer = {id(tensor): node for node in nodes for tensor in node.outputs}
    for number, pattern in enumerate(patterns, start=1):
        if number not in owner.values():
            raise ModelError(f"model {model.name}: block pattern {number} ({pattern!r}) matches no layer")
        below = {id(node) for node in nodes if owner[id(node)] <= number}  # blocks 1 … number
        leaving = {}
        for node in nodes:
            for tensor in node.input_tensors:
                made = producer.get(id(tensor))
                if id(node) in below and made is not None and id(made) not in below:
                    raise ModelError(f"model {model.name}: block {number} ({pattern!r}): layer {node.operation.name} reads "
                                     f"the output of layer {made.operation.name}, which a later block computes")
                if id(node) not in below and (made is None or id(made) in below):
                    leaving[id(tensor)] = made.operation.name if made is not None else "the input"
        if number < len(patterns) and len(leaving) != 1:
            raise ModelError(f"model {model.name}: block {number} ({pattern!r}) does not end at a single-tensor cut: "
                             f"{len(leaving)} tensors leave blocks 1 … {number}, from {', '.join(sorted(leaving.values()))}")
    # each block's nodes, lowest first: a block that ends at a cut is a run of the topological order
    ends = []
    for position, node in enumerate(nodes):
        if position + 1 == len(nodes) or owner[id(nodes[position + 1])] != owner[id(node)]:
            ends.append(position + 1)
    if len(ends) != len(patterns):  # unreachable when every block ends at a cut; kept as a guard
        raise ModelError(f"model {model.name}: the block patterns do not follow the graph's order, lowest first")
    return ends


def _parameters(operation: object) -> int:
    """How many numbers the layer holds (trainable or not); 0 for an operation without weights."""
    return int(sum(np.prod(weight.shape) for weight in getattr(operation, "weights", [])))
