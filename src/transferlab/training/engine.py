"""Many small trainings in one compiled step: K copies of one dense network, weights stacked.

For networks this small, per-step overhead, not arithmetic, decides the speed (bench/). The
repetitions x tuning settings of a variant are K independent trainings of the same architecture,
so their weights are stacked on a leading axis (`[K, in, out]`) and one compiled epoch trains them
all with batched matmuls. Each copy keeps everything a solo `training.fit` run would have: its own
training and validation rows, its own batch order (`training.epoch_order(seed, epoch)`), its own
optimizer and learning rate (SGD, momentum or Adam, with Keras' update rules and element-wise
clipping: `updates.py`), its own early stopping, and its own best weights, restored at the end into
the Keras model it came from. A test checks each copy against training it alone.

Copies that have stopped leave the stack (the stacked variables have a dynamic leading axis, so
a smaller stack needs no new trace). Each stack owns its variables and passes them to compiled
epochs shared by every stack of the same shape in the process (`compiled_epochs.py`): tracing and
optimising an epoch costs more than a small race trains, and it is paid once per shape.

Stacks also train side by side, one per core (`lanes.py`: `lanes`, `chunks`, `train_concurrently`,
named here too, so the race and the sweeps talk to one engine). A copy's `seconds` per epoch are its
stack's epoch wall time divided by the copies trained in it: its share of one core.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from transferlab.config import OptimizerSpec
from transferlab.training import compiled_epochs, single
from transferlab.training.lanes import CORES, chunks, lanes, train_concurrently  # noqa: F401 (the engine's scheduling)
from transferlab.training.stopping import EarlyStopping, StopRule
from transferlab.training.updates import stack_key


@dataclass(frozen=True)
class Copy:
    """One of the K trainings: which rows it learns from and is validated on, its batch order and optimizer."""

    rows: np.ndarray  # training rows of the shared inputs (every copy has the same number)
    val_rows: np.ndarray  # validation rows (same number for every copy)
    seed: int  # batch order: training.epoch_order(len(rows), seed, epoch)
    optimizer: OptimizerSpec


@dataclass
class CopyHistory:
    """Per-epoch rows of one copy: epoch, loss, accuracy, val_loss, val_accuracy, seconds."""

    rows: list[dict[str, float]] = field(default_factory=list)


def dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


class Copies:
    """K Keras models of one architecture trained together, one optimizer per stack (see `stack_key`).

    The models give the copies' first weights (copies may start from one model); `restore_best`
    writes each copy's best weights back into its own model, `best_weights` hands them out. A copy that has stopped
    may go on training until the stack is next compacted: only its best epoch's weights are kept,
    and nothing of it is recorded after it stopped.
    """

    def __init__(self, models: Sequence[keras.Model], x: np.ndarray, y: np.ndarray, copies: Sequence[Copy],
                 batch_size: int, rule: StopRule) -> None:
        if len(models) != len(copies) or not models:
            raise ValueError(f"{len(models)} models for {len(copies)} copies")
        if len({len(c.rows) for c in copies}) != 1 or len({len(c.val_rows) for c in copies}) != 1:
            raise ValueError("every copy needs the same number of training and validation rows")
        keys = {stack_key(c.optimizer) for c in copies}
        if len(keys) != 1:
            raise ValueError(f"one optimizer per stack (but SGD's rate), got {sorted(map(str, keys))}")
        self.optimizer = copies[0].optimizer
        x = x.reshape(len(x), -1)  # images (n, H, W, C) as the vectors the Dense stack reads (a view)
        self.models, self.copies, self.batch_size, self.k = list(models), list(copies), batch_size, len(copies)
        first = dense_layers(self.models[0])
        self.names = [layer.name for layer in first]
        activations = [keras.activations.get(layer.activation) for layer in first]
        self.best = [np.stack([dense_layers(m)[i].get_weights()[w] for m in self.models])
                     for i in range(len(self.names)) for w in (0, 1)]  # kernel1, bias1, kernel2, bias2, ...
        self.program = compiled_epochs.program([w.shape[1:] for w in self.best], activations, self.optimizer, batch_size, x, y)
        self.state = self.program.state()
        self.state.x.assign(x)
        self.state.y.assign(y)
        val = np.stack([c.val_rows for c in copies])
        self.x_val, self.y_val = x[val], y[val]  # [K, n_val, features], [K, n_val]
        self.stopper = EarlyStopping(rule, self.k)
        self.histories = [CopyHistory() for _ in copies]
        self.epoch = 0
        self.rates = np.array([c.optimizer.learning_rate for c in copies], dtype=np.float32)

    def _shared_prefix(self, trained: tuple[int, ...]) -> int:
        """How many lowest layers are fixed in this phase and equal in every copy (the reused, frozen ones).

        Their forward pass is one plain matmul over all copies' batches instead of K small ones:
        the same arithmetic (recomputed from pixels every step, as `freeze` must), done faster.
        """
        lowest_trained = min(trained) // 2 if trained else len(self.names)
        shared = 0
        while shared < lowest_trained and all((w == w[:1]).all() for w in self.best[2 * shared : 2 * shared + 2]):
            shared += 1
        return shared

    def _keep(self, stack: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Shrink the stack to the positions `keep` (the copies still training)."""
        index, state = tf.constant(keep), self.state
        for variable in (*state.weights, *state.first, *state.second):
            variable.assign(tf.gather(variable, index))
        return stack[keep]

    def train(self, trainable: Sequence[str], epochs: int | None = None, rate_factor: float = 1.0,
              multipliers: Sequence[float] | None = None) -> None:
        """One phase: train the named layers of every copy until each stops, or for exactly `epochs` epochs.

        `multipliers` (one per dense layer, bottom first; default all 1) scale each layer's rate.

        The phase ends on each copy's best weights (restored, as Keras' `EarlyStopping` does); a
        later phase (e.g. after unfreezing) goes on from them with fresh optimizer state, as Keras'
        recompile does, and the best epoch so far stays the one to beat.
        """
        trained = tuple(2 * self.names.index(name) + w for name in trainable for w in (0, 1))
        state, shared = self.state, self._shared_prefix(trained)
        multipliers = tuple(float(m) for m in multipliers) if multipliers is not None else (1.0,) * len(self.names)
        if len(multipliers) != len(self.names):
            raise ValueError(f"{len(multipliers)} rate multipliers for {len(self.names)} dense layers")
        run_epoch, evaluate = self.program.epoch_functions(state, trained, shared, multipliers)
        if self.epoch:
            self.stopper.start_phase()
        last = self.epoch + epochs if epochs is not None else self.stopper.rule.max_epochs
        n = len(self.copies[0].rows)
        stack = np.flatnonzero(self.stopper.active)  # which copy sits at each position of the stack
        for variable, best in zip(state.prefix[: 2 * shared], self.best, strict=False):
            variable.assign(best[0])
        for variable, best in zip(state.weights, self.best, strict=True):
            variable.assign(best[stack])
        for variable in (*state.first, *state.second):
            variable.assign(tf.zeros((len(stack), *variable.shape[1:])))
        state.steps.assign(0.0)
        variables = state.variables()
        while len(stack) and self.epoch < last:
            self.epoch += 1
            active = self.stopper.active[stack]
            if not active.all():  # leave the stopped copies behind (a gather costs less than one of their epochs)
                stack, active = self._keep(stack, np.flatnonzero(active)), active[active]
            order = np.stack([self.copies[k].rows[single.epoch_order(n, self.copies[k].seed, self.epoch)] for k in stack])
            with CORES:
                start = time.perf_counter()
                loss, accuracy = run_epoch(variables, tf.constant(order.astype(np.int32)),
                                           tf.constant(self.rates[stack] * rate_factor), tf.constant(rate_factor, tf.float32))
                loss, accuracy = loss.numpy(), accuracy.numpy()  # waits for the epoch to finish
                seconds = (time.perf_counter() - start) / len(stack)
                val_loss, val_accuracy = (t.numpy() for t in evaluate(variables, self.x_val[stack], self.y_val[stack]))
            monitored = np.full(self.k, np.nan)
            monitored[stack] = val_loss if self.stopper.rule.monitor == "val_loss" else val_accuracy
            was_active = self.stopper.active
            improved = self.stopper.update(self.epoch, monitored, last, may_stop=epochs is None)[stack]
            if improved.any():
                for best, variable in zip(self.best, state.weights, strict=True):
                    best[stack[improved]] = variable.numpy()[improved]
            for pos, k in enumerate(stack):
                if was_active[k]:
                    self.histories[k].rows.append({
                        "epoch": self.epoch, "loss": float(loss[pos]), "accuracy": float(accuracy[pos]),
                        "val_loss": float(val_loss[pos]), "val_accuracy": float(val_accuracy[pos]), "seconds": seconds,
                    })
            if not self.stopper.active[stack].any():
                break

    def best_weights(self, k: int) -> list[np.ndarray]:
        """Copy k's best-epoch weights, Keras order: kernel and bias of each dense layer, bottom first."""
        return [w[k] for w in self.best]

    def restore(self, k: int, model: keras.Model) -> None:
        """Copy k's best weights into `model` (its architecture)."""
        set_weights(model, self.best_weights(k))

    def restore_best(self) -> list[keras.Model]:
        """Write each copy's best-epoch weights into its Keras model; returns the models."""
        if len({id(model) for model in self.models}) < len(self.models):
            raise ValueError("copies that started from one model share it: restore them one by one (set_weights)")
        for k, model in enumerate(self.models):
            set_weights(model, self.best_weights(k))
        return self.models


def set_weights(model: keras.Model, weights: Sequence[np.ndarray]) -> None:
    """Kernels and biases (`Copies.best_weights`) into the model's dense layers, bottom first."""
    for i, layer in enumerate(dense_layers(model)):
        layer.set_weights([weights[2 * i], weights[2 * i + 1]])


def score(models: Sequence[keras.Model], x: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    """Loss and accuracy of each model (one architecture) on (x, y), in one stacked forward pass.

    Run eagerly: one pass over the test set is a handful of ops, cheaper than tracing a graph for it
    (and `training.evaluate` would trace once per model).
    """
    layers = [dense_layers(model) for model in models]
    activations = [keras.activations.get(layer.activation) for layer in layers[0]]
    weights = [tf.constant(np.stack([ls[i].get_weights()[w] for ls in layers])) for i in range(len(activations)) for w in (0, 1)]

    def forward(h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        h = tf.broadcast_to(h, [len(models), *h.shape])
        for i, activation in enumerate(activations):
            h = activation(tf.matmul(h, weights[2 * i]) + weights[2 * i + 1][:, None, :])
        labels = tf.broadcast_to(tf.constant(y), [len(models), len(y)])
        loss = tf.reduce_mean(single.sparse_crossentropy(labels, h), axis=-1)
        hit = tf.cast(tf.equal(tf.argmax(h, -1), tf.cast(labels, tf.int64)), tf.float32)
        return loss, tf.reduce_mean(hit, axis=-1)

    loss, accuracy = (t.numpy() for t in forward(tf.constant(x.reshape(len(x), -1))))  # images flattened
    return [{"loss": float(a), "accuracy": float(b)} for a, b in zip(loss, accuracy, strict=True)]
