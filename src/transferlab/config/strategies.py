"""The strategy table: what each transfer strategy trains, and what a variant of it must say.

One entry per strategy. Its phases are what `race.race` trains (which layers stay fixed,
for how long, at what share of the tuned rate, how the rate falls from layer to layer); `frozen`,
`takes` and `may_take` are what `config.check_variant` demands of a variant using it, so the
schema, the checks and the race all read this one table. Adding a strategy is an entry (and, where its phases are new, a function)
here, a test, and a variant in params.yaml. No TensorFlow here: the validate stage reads it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from transferlab.config import VariantSpec


@dataclass(frozen=True)
class Phase:
    fixed: tuple[int, ...]  # the hidden layers (hidden1 is 1) that stay fixed in this phase
    epochs: int | None = None  # a phase of fixed length; None: until early stopping ends it
    rate_factor: float = 1.0  # share of the tuned learning rate
    layer_decay: float = 1.0  # per-layer rates: the output layer at the phase's rate, each dense layer below at this times the one above


def lowest(k: int) -> tuple[int, ...]:
    """hidden1 … hidden{k}."""
    return tuple(range(1, k + 1))


def layer_multipliers(layers: int, layer_decay: float) -> tuple[float, ...]:
    """The rate multiplier of each of `layers` dense layers, bottom first: decay ** (distance below the output layer).

    timm's `layer_decay`, fastai's discriminative rates (ULMFiT): the top layer learns at the full
    rate, each layer below at `layer_decay` times the rate of the layer above it.
    """
    return tuple(float(layer_decay ** (layers - 1 - j)) for j in range(layers))


@dataclass(frozen=True)
class StrategyRule:
    summary: str
    phases: Callable[[VariantSpec], list[Phase]]
    frozen: Literal["none", "some"]  # frozen_layers must be 0 / at least 1
    cached: bool = False  # train the upper layers on the fixed layers' outputs, computed once
    takes: tuple[str, ...] = ()  # variant sections this strategy needs (and only a strategy naming them may set)
    may_take: tuple[str, ...] = ()  # variant sections this strategy may set but does not need
    keeps_output: bool = False  # the init model's output layer is copied too: it trains on, on its own task
    # The strategy whose variant of the same network (same init, layers and budget) the report compares this one
    # with: full fine-tuning for a change of how it trains; `freeze` for `cache`, whose results are the same by
    # construction (`same_as_twin`), so the two count as one comparison wherever they are compared.
    twin: str | None = None
    same_as_twin: bool = False
    color: str = "#4c72b0"  # the strategy's colour in every figure (one per strategy, named in the legend)


def _decay(variant: VariantSpec) -> float:
    return variant.layer_decay if variant.layer_decay is not None else 1.0


def kept_fixed(variant: VariantSpec) -> tuple[int, ...]:
    """The reused layers a variant keeps fixed from its first epoch: the lowest `frozen_layers`, or all outside its block."""
    if variant.train_layers is not None:
        low, high = variant.train_layers
        return tuple(i for i in lowest(variant.reuse_layers) if not low <= i <= high)
    return lowest(variant.frozen_layers)


def _one_phase(variant: VariantSpec) -> list[Phase]:
    return [Phase(kept_fixed(variant), layer_decay=_decay(variant))]


def _unfreezing(variant: VariantSpec) -> list[Phase]:
    assert variant.unfreeze is not None  # guaranteed by config validation
    step = variant.unfreeze
    return [Phase(lowest(variant.frozen_layers), epochs=step.frozen_epochs, layer_decay=_decay(variant)),
            Phase(lowest(variant.frozen_layers - step.unfreeze_top), rate_factor=step.rate_factor, layer_decay=_decay(variant))]


LP_FT_RATE_FACTOR = 0.1  # LP-FT's fine-tuning phase: the tuned rate times this (Kumar et al. 2022 fine-tune gently)


def _probe_then_fine_tune(variant: VariantSpec) -> list[Phase]:
    """LP-FT: every reused layer fixed until validation stops improving, then everything at a smaller rate."""
    return [Phase(lowest(variant.reuse_layers)), Phase((), rate_factor=LP_FT_RATE_FACTOR, layer_decay=_decay(variant))]


STRATEGIES: dict[str, StrategyRule] = {
    "scratch": StrategyRule("the same network, new random weights", _one_phase, frozen="none", color="#999999"),
    "reuse": StrategyRule("reused layers copied, every layer trained", _one_phase, frozen="none", color="#55a868"),
    "freeze": StrategyRule("the lowest reused layers fixed", _one_phase, frozen="some", color="#4c72b0"),
    "cache": StrategyRule("as freeze, trained on the fixed layers' outputs computed once", _one_phase, frozen="some",
                          cached=True, twin="freeze", same_as_twin=True, color="#dd8452"),
    "unfreeze": StrategyRule("as freeze for frozen_epochs, then the top frozen layers trained too", _unfreezing,
                             frozen="some", takes=("unfreeze",), may_take=("layer_decay",), color="#8172b3"),
    "lp_ft": StrategyRule("linear probe (reused layers fixed) until early stopping, then all layers at"
                          f" {LP_FT_RATE_FACTOR:g}x the rate", _probe_then_fine_tune, frozen="none", may_take=("layer_decay",),
                          twin="reuse", color="#c44e52"),
    # Lee et al. 2023: which block to tune depends on the shift, and tuning one block can beat tuning all
    "surgical": StrategyRule("only the reused layers train_layers [low, high] trained (and the new layers above); every"
                             " other reused layer fixed", _one_phase, frozen="none", takes=("train_layers",),
                             twin="reuse", color="#937860"),
    # ULMFiT's discriminative fine-tuning; timm's layer_decay, fastai's lr_mult (Keras has no built-in way)
    "discriminative": StrategyRule("as reuse, each dense layer at layer_decay times the rate of the layer above (the"
                                   " output layer at the tuned rate)", _one_phase, frozen="none", takes=("layer_decay",),
                                   twin="reuse", color="#da8bc3"),
    # the more-training control: the init model itself, every layer and its output, trained on under the same race
    "continue": StrategyRule("the init model as it is, output layer included, trained on (on its own task)", _one_phase,
                             frozen="none", keeps_output=True, color="#64b5cd"),
}
