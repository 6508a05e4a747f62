"""The report's section on strategies beyond the original note: LP-FT, surgical fine-tuning, discriminative rates.

Each variant of such a family is compared, repetition by repetition, with full fine-tuning of the
same layers (the `reuse` variant from the same init model, with the same reused and new layers,
under the same tuning budget): what the family changes is how that network is trained, so that is
the comparison that says whether the change helps. The scratch comparison is in the target's
main verdict; on each further test set of the target (`evaluations`), the same paired comparison is made.
No claim rests on an unconverged variant; accuracy only, speed is said elsewhere.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from transferlab.config import VariantSpec, strategies
from transferlab.report.render import accuracy_text
from transferlab.report.verdicts import (
    CHECKS,
    MAIN,
    TEST,
    Ranking,
    Wording,
    check_key,
    significantly_better,
    significantly_worse,
    twin_of,
    verdict_text,
    widening_key,
)
from transferlab.training.results import VariantResult


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
        lowest = strategies.layer_multipliers(depth, spec.layer_decay)[0]
        return (f"every layer trained, each at {spec.layer_decay:g}× the rate of the layer above,"
                f" hidden1 at {lowest:.3g}× the output layer's")
    return strategies.STRATEGIES[spec.strategy].summary


def comparison(result: VariantResult, twin: VariantResult | None, ranking: Ranking) -> str:
    if not result.converged:
        return "it has unconverged repetitions, so no claim"
    if twin is None:
        return "no full fine-tuning variant of the same network (strategy reuse) ran beside it, so no comparison"
    if not twin.converged:
        return f"its full fine-tuning counterpart {twin.variant} has unconverged repetitions, so no claim"
    checks = ranking.families.get(CHECKS)
    diff = checks.get(check_key(result, twin, MAIN)) if checks else None
    if diff is None or diff["ci95_low"] is None:
        return f"against full fine-tuning ({twin.variant}) there is no paired interval (set transfer.seeds > 1)"
    text = f"against full fine-tuning of the same layers ({twin.variant}): {verdict_text(diff)}, {_verdict(diff)}"
    for wording in list(ranking.sets.values())[1:]:  # each further test set's check, in its words
        if (found := checks.get(check_key(result, twin, wording))) is not None:
            text += f"; on the {wording.title} {verdict_text(found)}, {_verdict(found)}"
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
        if (checks := ranking.families.get(CHECKS)) is not None and checks.size:
            lines[0] += f" Judged together with every other check against full fine-tuning: {checks.describe()}."
        for result in members:
            lines.append(f"**{result.variant}** ({recipe(specs[result.variant])}): "
                         f"{accuracy_text(result.summary('target_accuracy'))}; "
                         f"{comparison(result, twin_of(result, ranking.claimable), ranking)}.")
        sections.append((family.title, lines))
    return sections


def lp_ft_sentence(probed: VariantResult, tuned: VariantResult, ranking: Ranking, wording: Wording) -> str:
    """Kumar et al. 2022's claim on one (lp_ft, reuse) pair and one further (shifted) test set: LP-FT's gain over
    fine-tuning is larger there than in-distribution."""
    name, shift = f"{probed.variant} against {tuned.variant}", wording.phrase
    checks = ranking.families.get(CHECKS)
    inside, shifted, widening = (checks.get(key) if checks else None for key in (
        check_key(probed, tuned, MAIN), check_key(probed, tuned, wording), widening_key(probed, tuned, wording)))
    if inside is None or shifted is None or widening is None:
        return f"{name}: no shared repetition to compare."
    text = (f"{name}: {verdict_text(inside)} in-distribution, {verdict_text(shifted)} {shift};"
            f" the gain {shift} minus the gain in-distribution is {verdict_text(widening)}")
    if widening["ci95_low"] is None:
        return text + ": one repetition, so no claim either way (set transfer.seeds > 1)."
    if significantly_better(widening) and significantly_better(shifted):
        return text + f": the claim holds here (LP-FT is ahead {shift}, by more than in-distribution)."
    if significantly_better(widening):
        return text + (f": the gap moves LP-FT's way {shift}, but LP-FT is not significantly ahead {shift},"
                       " so the claim holds only in part.")
    if significantly_worse(widening):
        return text + f": the opposite of the claim (LP-FT loses ground {shift})."
    return text + ": the corrected test finds no difference, so this run neither supports nor refutes the claim."


def lp_ft_verdict(ranking: Ranking) -> str | None:
    """Whether LP-FT beats full fine-tuning more on each further (shifted) test set than in-distribution; None without
    a pair scored on one."""
    pairs = [(r, twin, wording) for r in ranking.claimable if r.strategy == "lp_ft"
             if (twin := twin_of(r, ranking.claimable)) is not None
             for key, wording in ranking.sets.items() if key != TEST and r.scored(key) and twin.scored(key)]
    if not pairs:
        return None
    return ("Kumar et al. (2022) report that a linear probe then fine-tuning (LP-FT) beats full fine-tuning by more"
            " under distribution shift than in-distribution. Here (paired, repetition by repetition, corrected with the"
            " other checks against full fine-tuning): " + " ".join(lp_ft_sentence(a, b, ranking, w) for a, b, w in pairs))
