"""The race a target's variants ran, in words, from the budget each result recorded (no TensorFlow)."""
from __future__ import annotations

from collections.abc import Mapping

from transferlab.report.verdicts import Ranking
from transferlab.training.results import VariantResult


def protocol(result: VariantResult) -> str:
    """The race every ranked variant ran, stated from its recorded budget."""
    budget = result.budget
    grid = budget.get("grid", [])
    if budget.get("patience"):
        stopping = (f"early stopping on {budget['monitor']} (patience {budget['patience']} epochs, min_delta"
                    f" {budget.get('min_delta', 0):g}) with at most {budget['max_epochs']} epochs, best weights restored")
    else:
        stopping = f"a fixed {budget['max_epochs']} epochs (no early stopping, last epoch kept)"
    repetitions = "One repetition draws" if result.seeds == 1 else f"Each of {result.seeds} repetitions draws"
    return (
        f"**Protocol.** {repetitions} {result.labels_per_class} labelled images per class"
        f" and splits them into {result.train_per_class} for training and {result.validation_per_class} for"
        f" validation (validation share {budget['validation_fraction']:g}); the test set is scored once, on the"
        f" weights chosen on validation. Every variant tries the same {len(grid)} optimizer setting"
        f"{'s' if len(grid) != 1 else ''} ({'; '.join(grid)}) in every repetition and keeps the one with the"
        f" best {budget['monitor']}; {stopping}; batch size {budget['batch_size']}. Repetitions are paired: every variant of"
        " repetition i sees the same labelled images, the same split and the same seed. A repetition that hit the"
        " epoch cap while still improving is *unconverged*: its row is marked ⚠ and no statement rests on it."
    )


def protocols(rankings: Mapping[str, Ranking]) -> list[str]:
    """One protocol paragraph when every target ran the same race, else one per target, named."""
    texts = {target: protocol(r.baseline or r.ranked[0]) for target, r in rankings.items() if r.ranked}
    if len(set(texts.values())) <= 1:
        return list(dict.fromkeys(texts.values()))
    return [text.replace("**Protocol.**", f"**Protocol, target `{target}`.**") for target, text in texts.items()]
