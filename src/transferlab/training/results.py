"""The typed results of the race: what one repetition of a variant found, and what a variant pools.

`RepetitionResult` is one repetition (labelled draw + seed) after every grid setting was tried
and one was chosen on validation; `VariantResult` pools the repetitions of a variant with their
intervals. A variant round-trips through two JSON files, so the report reads exactly what the stage
wrote: its results (`metrics/transfer/<variant>.json`, what `dvc metrics show` prints) and its record
(`runs/transfer/<variant>.json`: what was raced and under which MLflow run). Plain Python and the
statistics module: no TensorFlow.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from transferlab import statistics

NEAR_BEST = 0.99  # "time to reach 99 % of its own best validation accuracy"


def first_near_best(values: Sequence[float]) -> int:
    """The index of the first value at least `NEAR_BEST` of the best one: when a run got near its own best."""
    top = max(values)
    return next(i for i, value in enumerate(values) if value >= NEAR_BEST * top)


@dataclass(frozen=True)
class SettingResult:
    """One grid setting tried in one repetition, judged on validation only."""

    setting: str
    val_loss: float  # at the setting's best epoch
    val_accuracy: float
    best_epoch: int
    epochs_run: int
    stop_reason: str  # patience | max_epochs | fixed_epochs | diverged
    converged: bool


@dataclass(frozen=True)
class RepetitionResult:
    """One repetition of a variant: the chosen setting's run, scored once on the test set."""

    repetition: int
    seed: int
    labels_seed: int
    setting: str  # the grid setting chosen on validation
    target_accuracy: float  # test set, scored once on the selected weights
    target_loss: float
    val_accuracy: float
    val_loss: float
    best_epoch: int
    epochs_run: int
    stop_reason: str
    converged: bool
    train_seconds: float  # the chosen run's training time (its share of the batched step), up to its last epoch
    seconds_to_best: float
    seconds_to_near_best: float  # first epoch at >= 99 % of its own best validation accuracy
    seconds_per_epoch: float
    shift_accuracy: float | None = None  # the shifted test set (`targets.<name>.shift`), scored once on the same weights
    shift_loss: float | None = None  # None: the target has no shifted test set
    settings: list[SettingResult] = field(default_factory=list)
    val_accuracy_per_epoch: list[float] = field(default_factory=list)  # the chosen run's curve (monitoring, not the test set)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RepetitionResult:
        names = {f.name for f in fields(cls)}
        values = {key: value for key, value in raw.items() if key in names}
        values["settings"] = [SettingResult(**s) for s in raw.get("settings", [])]
        return cls(**values)


def _interval(values: Sequence[float]) -> dict[str, Any]:
    return statistics.summarize(values)


@dataclass(frozen=True)
class VariantResult:
    """A variant's repetitions, pooled: means, 95 % intervals, what was chosen, whether it converged."""

    variant: str
    strategy: str
    init_from: str
    target: str
    reuse_layers: int
    frozen_layers: int
    new_layers: int
    trainable_params: int
    frozen_params: int
    labels_per_class: int | str  # or "all"
    train_per_class: int
    validation_per_class: int
    budget: dict[str, Any]  # the tuning budget (grid, epoch cap, patience, …): equal budgets rank together
    repetitions: list[RepetitionResult]
    mlflow_run_id: str = ""
    mlflow_experiment_id: str = ""

    def _values(self, key: str) -> list[float]:
        return [float(getattr(r, key)) for r in self.repetitions]

    def summary(self, key: str) -> dict[str, Any]:
        """n, mean, std and the 95 % t-interval of a per-repetition quantity."""
        return _interval(self._values(key))

    def mean(self, key: str) -> float:
        return float(np.mean(self._values(key)))

    @property
    def seeds(self) -> int:
        return len(self.repetitions)

    @property
    def has_shift(self) -> bool:
        """True when every repetition was also scored on the target's shifted test set."""
        return all(r.shift_accuracy is not None for r in self.repetitions)

    @property
    def converged(self) -> bool:
        """True when every repetition's chosen run converged; no claim rests on a variant where one did not."""
        return all(r.converged for r in self.repetitions)

    def chosen_settings(self) -> dict[str, int]:
        """How often each grid setting was chosen, in grid order."""
        counts: dict[str, int] = {}
        for name in [s.setting for s in self.repetitions[0].settings] or [r.setting for r in self.repetitions]:
            counts.setdefault(name, 0)
        for r in self.repetitions:
            counts[r.setting] = counts.get(r.setting, 0) + 1
        return counts

    def tuning(self) -> list[dict[str, Any]]:
        """Per grid setting: mean validation accuracy and loss over repetitions, and how often it was chosen."""
        chosen = self.chosen_settings()
        rows = []
        for i, name in enumerate(s.setting for s in self.repetitions[0].settings):
            tried = [r.settings[i] for r in self.repetitions]
            rows.append({"setting": name, "val_accuracy": float(np.mean([s.val_accuracy for s in tried])),
                         "val_loss": float(np.mean([s.val_loss for s in tried])), "chosen": chosen.get(name, 0),
                         "unconverged": sum(not s.converged for s in tried)})
        return rows

    def to_json(self) -> dict[str, Any]:
        """The metrics file, results only: pooled numbers first (what `dvc metrics show` lists), then every repetition."""
        accuracy = self.summary("target_accuracy")
        pooled = {
            "target_accuracy": accuracy["mean"], "target_accuracy_std": accuracy["std"],
            "target_accuracy_ci95": [accuracy["ci95_low"], accuracy["ci95_high"]],
            "target_loss": self.mean("target_loss"), "val_accuracy": self.mean("val_accuracy"),
            "best_epoch": self.mean("best_epoch"), "epochs_run": self.mean("epochs_run"),
            "converged": self.converged, "unconverged_repetitions": sum(not r.converged for r in self.repetitions),
            "train_seconds": self.mean("train_seconds"), "seconds_to_best": self.mean("seconds_to_best"),
            "seconds_to_near_best": self.mean("seconds_to_near_best"), "seconds_per_epoch": self.mean("seconds_per_epoch"),
        }
        if self.has_shift:  # beside the test set's numbers, in the same form (absent without a shifted test set)
            shifted = self.summary("shift_accuracy")
            pooled |= {"shift_accuracy": shifted["mean"], "shift_accuracy_std": shifted["std"],
                       "shift_accuracy_ci95": [shifted["ci95_low"], shifted["ci95_high"]], "shift_loss": self.mean("shift_loss")}
        return {**pooled, "repetitions": [asdict(r) for r in self.repetitions]}

    def record(self) -> dict[str, Any]:
        """The run record: what was raced (the recipe, its budget, its repetitions and choices) and its MLflow run."""
        described = {key: value for key, value in asdict(self).items() if key != "repetitions"}
        return {**described, "seeds": self.seeds, "chosen_settings": self.chosen_settings()}

    @classmethod
    def from_json(cls, metrics: Mapping[str, Any], record: Mapping[str, Any]) -> VariantResult:
        """The variant back from its metrics file (`to_json`) and its run record (`record`)."""
        names = {f.name for f in fields(cls)} - {"repetitions"}
        values = {key: value for key, value in record.items() if key in names}
        return cls(**values, repetitions=[RepetitionResult.from_dict(r) for r in metrics["repetitions"]])
