"""The strategy table: what each transfer strategy trains, and what a variant of it must say.

One entry per strategy. Its phases are what `strategies.race` trains (which lowest layers stay
fixed, for how long, at what share of the tuned rate); `frozen` and `takes` are what
`config.check_variant` demands of a variant using it, so the schema, the checks and the race all
read this one table. Adding a strategy is an entry (and, where its phases are new, a function)
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
    frozen_layers: int  # hidden1 … hidden{frozen_layers} stay fixed in this phase
    epochs: int | None = None  # a phase of fixed length; None: until early stopping ends it
    rate_factor: float = 1.0  # share of the tuned learning rate


@dataclass(frozen=True)
class StrategyRule:
    summary: str
    phases: Callable[[VariantSpec], list[Phase]]
    frozen: Literal["none", "some"]  # frozen_layers must be 0 / at least 1
    cached: bool = False  # train the upper layers on the fixed layers' outputs, computed once
    takes: tuple[str, ...] = ()  # optional variant sections this strategy needs (and only it may set)
    keeps_output: bool = False  # the init model's output layer is copied too: it trains on, on its own task


def _one_phase(variant: VariantSpec) -> list[Phase]:
    return [Phase(variant.frozen_layers)]


def _unfreezing(variant: VariantSpec) -> list[Phase]:
    assert variant.unfreeze is not None  # guaranteed by config validation
    step = variant.unfreeze
    return [Phase(variant.frozen_layers, epochs=step.frozen_epochs),
            Phase(variant.frozen_layers - step.unfreeze_top, rate_factor=step.rate_factor)]


LP_FT_RATE_FACTOR = 0.1  # LP-FT's fine-tuning phase: the tuned rate times this (Kumar et al. 2022 fine-tune gently)


def _probe_then_fine_tune(variant: VariantSpec) -> list[Phase]:
    """LP-FT: every reused layer fixed until validation stops improving, then everything at a smaller rate."""
    return [Phase(variant.reuse_layers), Phase(0, rate_factor=LP_FT_RATE_FACTOR)]


STRATEGIES: dict[str, StrategyRule] = {
    "scratch": StrategyRule("the same network, new random weights", _one_phase, frozen="none"),
    "reuse": StrategyRule("reused layers copied, every layer trained", _one_phase, frozen="none"),
    "freeze": StrategyRule("the lowest reused layers fixed", _one_phase, frozen="some"),
    "cache": StrategyRule("as freeze, trained on the fixed layers' outputs computed once", _one_phase, frozen="some",
                          cached=True),
    "unfreeze": StrategyRule("as freeze for frozen_epochs, then the top frozen layers trained too", _unfreezing,
                             frozen="some", takes=("unfreeze",)),
    "lp_ft": StrategyRule("linear probe (reused layers fixed) until early stopping, then all layers at"
                          f" {LP_FT_RATE_FACTOR:g}x the rate", _probe_then_fine_tune, frozen="none"),
    # the more-training control: the init model itself, every layer and its output, trained on under the same race
    "continue": StrategyRule("the init model as it is, output layer included, trained on (on its own task)", _one_phase,
                             frozen="none", keeps_output=True),
}
