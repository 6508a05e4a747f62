"""The report's section on strategies beyond the original note: LP-FT, surgical fine-tuning, discriminative rates.

Each variant of such a family is compared, repetition by repetition, with full fine-tuning of the
same layers (the `reuse` variant from the same init model, with the same reused and new layers,
under the same tuning budget): what the family changes is how that network is trained, so that is
the comparison that says whether the change helps. The scratch comparison is in the target's
main verdict; where the target has a shifted test set, the same paired comparison is made on it.
No claim rests on an unconverged variant; accuracy only, speed is said elsewhere.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from transferlab import rules
from transferlab.config import VariantSpec
from transferlab.reporting import accuracy_text, difference_text
from transferlab.results import VariantResult
from transferlab.verdicts import SHIFT, Ranking, fine_tuning_twin, paired_vs, significantly_better, significantly_worse


@dataclass(frozen=True)
class Family:
    title: str
    reference: str


FAMILIES = {  # strategy -> its family, in the order the report shows them
    "lp_ft": Family("Linear probe, then fine-tune (LP-FT)", "Kumar et al. 2022, *Fine-Tuning can Distort Pretrained Features*"),
    "surgical": Family("Surgical fine-tuning", "Lee et al. 2023, *Surgical Fine-Tuning Improves Adaptation to Distribution Shifts*"),
    "discriminative": Family("Discriminative learning rates", "Howard & Ruder 2018 (ULMFiT); fastai's `lr_mult`, timm's `layer_decay`"),
}


def recipe(spec: VariantSpec) -> str:
    """What the variant trains, in words, from its params."""
    if spec.strategy == "surgical" and spec.train_layers is not None:
        low, high = spec.train_layers
        block = f"hidden{low}" if low == high else f"hidden{low}–{high}"
        return f"only {block} of the {spec.reuse_layers} reused layers trained, with the new layers above"
    if spec.strategy == "discriminative" and spec.layer_decay is not None:
        depth = spec.reuse_layers + len(spec.new_hidden) + 1
        lowest = rules.layer_multipliers(depth, spec.layer_decay)[0]
        return (f"every layer trained, each at {spec.layer_decay:g}× the rate of the layer above,"
                f" hidden1 at {lowest:.3g}× the output layer's")
    return rules.STRATEGIES[spec.strategy].summary


def comparison(result: VariantResult, twin: VariantResult | None) -> str:
    if not result.converged:
        return "it has unconverged repetitions, so no claim"
    if twin is None:
        return "no full fine-tuning variant of the same network (strategy reuse) ran beside it, so no comparison"
    if not twin.converged:
        return f"its full fine-tuning counterpart {twin.variant} has unconverged repetitions, so no claim"
    diff = paired_vs(result, twin)
    if diff is None or diff["ci95_low"] is None:
        return f"against full fine-tuning ({twin.variant}) there is no paired interval (set transfer.seeds > 1)"
    text = f"against full fine-tuning of the same layers ({twin.variant}): {difference_text(diff)}, {_verdict(diff)}"
    if result.has_shift and twin.has_shift and (shifted := paired_vs(result, twin, SHIFT)) is not None:
        text += f"; on the shifted test set {difference_text(shifted)}, {_verdict(shifted)}"
    return text


def _verdict(diff: dict) -> str:
    return "more accurate" if significantly_better(diff) else "less accurate" if significantly_worse(diff) else "not distinguishable"


def paragraphs(ranking: Ranking, specs: Mapping[str, VariantSpec]) -> list[tuple[str, list[str]]]:
    """(family heading, one paragraph per variant) for each family with a ranked variant on this target."""
    sections = []
    for strategy, family in FAMILIES.items():
        members = [r for r in ranking.ranked if r.strategy == strategy and r.variant in specs]
        if not members:
            continue
        lines = [f"{family.reference}."]
        for result in members:
            lines.append(f"**{result.variant}** ({recipe(specs[result.variant])}): "
                         f"{accuracy_text(result.summary('target_accuracy'))}; "
                         f"{comparison(result, fine_tuning_twin(result, ranking.ranked))}.")
        sections.append((family.title, lines))
    return sections
