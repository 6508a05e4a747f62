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
    # {set: {"accuracy": a, "loss": l}}: each further test set of the target (`targets.<name>.evaluations`), in its
    # order, scored once on the same weights; written as `<set>_accuracy`, `<set>_loss` in this place
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: list[SettingResult] = field(default_factory=list)
    val_accuracy_per_epoch: list[float] = field(default_factory=list)  # the chosen run's curve (monitoring, not the test set)

    def metric(self, key: str) -> float | None:
        """A per-repetition number by its metrics-file key: a field (`target_accuracy`) or a further test set's
        (`shift_accuracy`, `shift_loss`); None where this repetition was not scored on that set."""
        if key in _FIELDS:
            return getattr(self, key)
        name, _, score = key.rpartition("_")
        return self.evaluations.get(name, {}).get(score)

    def to_dict(self) -> dict[str, Any]:
        """The repetition as the metrics file holds it: each further test set's scores flat, where the fields' order puts them."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "evaluations":
                out |= {f"{name}_{score}": v for name, scores in value.items() for score, v in scores.items()} or UNSCORED
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RepetitionResult:
        values = {key: value for key, value in raw.items() if key in _FIELDS}
        values["settings"] = [SettingResult(**s) for s in raw.get("settings", [])]
        scored: dict[str, dict[str, float]] = {}
        for key, value in raw.items():  # every other `<set>_<score>` is a further test set's (a null: not scored)
            name, _, score = key.rpartition("_")
            if key not in _FIELDS and score in SCORES and name and value is not None:
                scored.setdefault(name, {})[score] = value
        return cls(**values, evaluations=scored)


SCORES = ("accuracy", "loss")  # what each test set is scored by (`engine.score`), in this order
# What a repetition of a target with no further test set has always written (the metrics format before `evaluations`
# was a map, when the only one was `shift`): kept, so that the committed metrics files rebuild with the same keys.
UNSCORED = {"shift_accuracy": None, "shift_loss": None}
_FIELDS = frozenset(f.name for f in fields(RepetitionResult)) - {"evaluations"}


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
        return [float(r.metric(key)) for r in self.repetitions]

    def summary(self, key: str) -> dict[str, Any]:
        """n, mean, std and the 95 % t-interval of a per-repetition quantity."""
        return _interval(self._values(key))

    def mean(self, key: str) -> float:
        return float(np.mean(self._values(key)))

    @property
    def seeds(self) -> int:
        return len(self.repetitions)

    @property
    def evaluations(self) -> list[str]:
        """The further test sets every repetition was scored on, in the target's order."""
        first = self.repetitions[0].evaluations if self.repetitions else {}
        return [name for name in first if all(name in r.evaluations for r in self.repetitions)]

    def scored(self, key: str) -> bool:
        """Was every repetition scored on the test set whose accuracy is `key` (`target_accuracy`: the test set, always)?"""
        return key == "target_accuracy" or key in [f"{name}_accuracy" for name in self.evaluations]

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
        for name in self.evaluations:  # each further test set beside the test set's numbers, in the same form
            found = self.summary(f"{name}_accuracy")
            pooled |= {f"{name}_accuracy": found["mean"], f"{name}_accuracy_std": found["std"],
                       f"{name}_accuracy_ci95": [found["ci95_low"], found["ci95_high"]], f"{name}_loss": self.mean(f"{name}_loss")}
        return {**pooled, "repetitions": [r.to_dict() for r in self.repetitions]}

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
