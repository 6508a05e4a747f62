"""Speed claims do not flip between two identical runs: a tiny real race run twice, the verdicts compared."""
from __future__ import annotations

from test_strategies import LABELS, NETWORK, arrays, source_model  # noqa: F401 (the shared source and target fixtures)

from transferlab.config import (
    OptimizerSpec,
    Protocol,
    StoppingSpec,
    VariantSpec,
    strategies,
)
from transferlab.data import repetitions
from transferlab.report import speed, verdicts
from transferlab.training import race
from transferlab.training.results import VariantResult

PROTOCOL = Protocol(batch_size=16, validation_fraction=0.25, stopping=StoppingSpec(max_epochs=30, patience=3, min_delta=0.01),
                    grid=[OptimizerSpec(name="sgd", learning_rate=0.05), OptimizerSpec(name="adam", learning_rate=0.003)])
PLAN = repetitions.plan(3, train_seed=5, target_seed=0, resample_labels=True)
VARIANTS = {
    "scratch": VariantSpec(strategy="scratch", init_from="source", target="t", reuse_layers=3),
    "freeze2": VariantSpec(strategy="freeze", init_from="source", target="t", reuse_layers=3, frozen_layers=2),
    "cache2": VariantSpec(strategy="cache", init_from="source", target="t", reuse_layers=3, frozen_layers=2),
}


def run_all(source, arrays) -> verdicts.Ranking:
    """Every variant raced once, as the transfer stage records it, then ranked as the report ranks them."""
    results = []
    for name, variant in VARIANTS.items():
        outcome = race.race(variant, source, NETWORK, PROTOCOL, arrays, LABELS, PLAN)
        train, validation = outcome.split_per_class
        results.append(VariantResult(
            variant=name, strategy=variant.strategy, init_from="source", target="t", reuse_layers=variant.reuse_layers,
            frozen_layers=len(strategies.kept_fixed(variant)), new_layers=len(variant.new_hidden) + 1,
            trainable_params=outcome.trainable_params, frozen_params=outcome.frozen_params, labels_per_class=LABELS,
            train_per_class=train, validation_per_class=validation, budget=PROTOCOL.budget(), repetitions=outcome.results))
    return verdicts.rank(results)


def test_two_identical_runs_make_the_same_speed_claims(source_model, arrays) -> None:
    first, second = run_all(source_model, arrays), run_all(source_model, arrays)
    # what a claim may rest on is the same in both runs (the race is deterministic on one machine) ...
    for one, two in zip(first.ranked, second.ranked, strict=True):
        assert [speed.epochs_to_near_best(r) for r in one.repetitions] == [speed.epochs_to_near_best(r) for r in two.repetitions]
    # ... the timers are not (they are stated as measurements, never judged)
    costs = [[r.seconds_per_epoch for r in result.repetitions] for result in first.ranked]
    assert costs != [[r.seconds_per_epoch for r in result.repetitions] for result in second.ranked]
    claims = speed.speed_claims(first)
    assert "Against it" in claims and [r.variant for r in first.claimable] != []  # a converged scratch: claims are made
    assert speed.speed_claims(second) == claims
    assert speed.speed_verdict(second).startswith(claims)  # the report's sentence: the same claims, then the measured costs
