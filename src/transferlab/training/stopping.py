"""Early stopping for K trainings at once, with Keras 3 `EarlyStopping` semantics. NumPy only.

The one rule every training in transferlab stops by (`training.fit` for one network, `batched`
for many copies): after each epoch the monitored quantity (validation loss by default) is an
*improvement* when it beats the best so far by more than `min_delta`; a copy stops once
`patience` epochs in a row brought none, or at `max_epochs`. The weights of the best epoch are
the ones kept (`restore_best_weights=True`, also when the cap ends the run, as Keras does at
train end). A copy that hit the cap while it still improved within its last `patience` epochs
has not converged: `converged` says so, and no claim may rest on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATIENCE = "patience"
MAX_EPOCHS = "max_epochs"
FIXED = "fixed_epochs"  # no early stopping: the run is as long as it was asked to be
DIVERGED = "diverged"  # the monitored value became NaN or infinite: the best finite epoch is kept


@dataclass(frozen=True)
class StopRule:
    """What to watch and when to give up (the params' `stopping:` section, as plain values)."""

    max_epochs: int
    patience: int | None = 20  # None: train exactly max_epochs and keep the last epoch (a fixed protocol)
    min_delta: float = 0.0
    monitor: str = "val_loss"  # val_loss (lower is better) or val_accuracy (higher is better)

    @property
    def lower_is_better(self) -> bool:
        return not self.monitor.endswith("accuracy")


class EarlyStopping:
    """The stopping state of K copies; `update` is called once per epoch with the K monitored values."""

    def __init__(self, rule: StopRule, copies: int) -> None:
        self.rule = rule
        self.best = np.full(copies, np.inf if rule.lower_is_better else -np.inf)
        self.best_epoch = np.zeros(copies, dtype=np.int64)
        self.wait = np.zeros(copies, dtype=np.int64)
        self.epochs_run = np.zeros(copies, dtype=np.int64)
        self.stop_reason: list[str | None] = [None] * copies

    @property
    def active(self) -> np.ndarray:
        return np.array([reason is None for reason in self.stop_reason])

    def improves(self, values: np.ndarray) -> np.ndarray:
        if self.rule.lower_is_better:
            return values + self.rule.min_delta < self.best
        return values - self.rule.min_delta > self.best

    def update(self, epoch: int, values: np.ndarray, last_epoch: int | None = None, may_stop: bool = True) -> np.ndarray:
        """Record epoch `epoch` (1-based) for the active copies; returns which of them improved (keep their weights).

        `last_epoch`: the epoch at which this phase ends regardless (defaults to `max_epochs`);
        `may_stop=False`: a phase of fixed length, which patience does not cut short. Without
        patience every epoch counts as the one to keep, so the last epoch is what is kept. A copy
        whose value is not finite stops as `diverged`, keeping its best finite epoch.
        """
        values = np.asarray(values, dtype=np.float64)
        diverged = self.active & ~np.isfinite(values)
        for k in np.flatnonzero(diverged):
            self.stop_reason[k] = DIVERGED
            self.epochs_run[k] = epoch
        active = self.active
        improved = active & (self.improves(values) if self.rule.patience is not None else True)
        self.best[improved] = values[improved]
        self.best_epoch[improved] = epoch
        self.wait[active & ~improved] += 1
        self.wait[improved] = 0
        self.epochs_run[active] = epoch
        end = self.rule.max_epochs if last_epoch is None else last_epoch
        for k in np.flatnonzero(active):
            if may_stop and self.rule.patience is not None and self.wait[k] >= self.rule.patience and epoch > 1:
                self.stop_reason[k] = PATIENCE
            elif epoch >= end:
                self.stop_reason[k] = MAX_EPOCHS if self.rule.patience is not None else FIXED
        return improved

    def start_phase(self) -> None:
        """A new training phase (e.g. after unfreezing): the best so far stays, patience starts afresh.

        Copies that diverged stay stopped.
        """
        self.wait[:] = 0
        self.stop_reason = [reason if reason == DIVERGED else None for reason in self.stop_reason]

    def converged(self) -> np.ndarray:
        """False where the cap ended a run that was still improving within its last `patience` epochs."""
        if self.rule.patience is None:
            return np.ones(len(self.best), dtype=bool)
        capped = np.array([reason == MAX_EPOCHS for reason in self.stop_reason])
        return ~(capped & (self.epochs_run - self.best_epoch < self.rule.patience))
