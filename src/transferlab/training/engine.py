"""Many small trainings in one compiled step: K copies of one dense network, weights stacked.

For networks this small, per-step overhead, not arithmetic, decides the speed (bench/). The
repetitions x tuning settings of a variant are K independent trainings of the same architecture,
so their weights are stacked on a leading axis (`[K, in, out]`) and one compiled epoch trains them
all with batched matmuls. Each copy keeps everything a solo `training.fit` run would have: its own
training and validation rows, its own batch order (`training.epoch_order(seed, epoch)`), its own
optimizer and learning rate (SGD, momentum or Adam, with Keras' update rules and element-wise
clipping), its own early stopping, and its own best weights, restored at the end into the Keras
model it came from. A test checks each copy against training it alone.

Copies that have stopped leave the stack (the stacked variables have a dynamic leading axis, so
a smaller stack needs no new trace). Each stack owns its variables (`_State`) and passes them to
compiled epochs shared by every stack of the same shape in the process (`_Program`): tracing and
optimising an epoch costs more than a small race trains, and it is paid once per shape.

Stacks also train side by side, one per core (`lanes`, `train_concurrently`): TensorFlow runs
each op on one thread here (`transferlab/__init__.py`), and a batched matmul this small does not
use a second core anyway: two stacks on two cores do 1.4-1.7x the work per second of one stack
(bench/stacked_copies.md). A copy's `seconds` per epoch are its stack's epoch wall time divided
by the copies trained in it: its share of one core.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import keras
import numpy as np
import tensorflow as tf

from transferlab.config import OptimizerSpec
from transferlab.training import single
from transferlab.training.stopping import EarlyStopping, StopRule

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7  # Keras' Adam defaults
T = TypeVar("T")


def lanes() -> int:
    """How many stacks train at once: one per CPU core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# However many threads train stacks (a race's chunks, a sweep's races side by side), at most one
# epoch per core computes at a time, so each epoch's wall time is one core's time.
_CORES = threading.BoundedSemaphore(lanes())


CHUNKS_PER_RACE = 4  # enough to keep two cores busy to the end of a race (copies stop at different epochs)


def chunks(members: Sequence[int], total: int) -> list[list[int]]:
    """One stack's members cut into near-equal chunks of at most ceil(total / CHUNKS_PER_RACE) copies.

    `total`: the copies in all stacks of the race. The cut does not depend on the machine's cores:
    a batched matmul's last bits can depend on how many copies share it, so a fixed cut keeps the
    same params giving the same bits on a machine with any number of cores (each op runs on one thread).
    """
    members = list(members)
    if not members:
        return []
    size = max(1, math.ceil(total / CHUNKS_PER_RACE))
    return [[int(i) for i in part] for part in np.array_split(members, math.ceil(len(members) / size))]


def train_concurrently(jobs: Sequence[Callable[[], T]], lanes: int) -> list[T]:
    """Run the jobs (each trains its own stack) on `lanes` threads; results in job order, the first error raised."""
    if lanes <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="lane") as pool:
        return list(pool.map(lambda job: job(), jobs))


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


def _per_copy(vector: tf.Tensor, like: tf.Variable) -> tf.Tensor:
    """A [K] vector shaped to broadcast against a [K, ...] tensor."""
    return tf.reshape(vector, [-1] + [1] * (len(like.shape) - 1))


def _stacked(value: np.ndarray) -> tf.Variable:
    """A variable whose leading (copies) axis may shrink without retracing the compiled epoch."""
    return tf.Variable(value, trainable=False, shape=tf.TensorShape([None, *value.shape[1:]]))


def stack_key(optimizer: OptimizerSpec) -> tuple:
    """Copies that can share one stack: the same optimizer but for SGD's learning rate.

    Within a stack, Adam and momentum copies share their (scalar) rate and use TensorFlow's fused
    update kernels; plain SGD copies each keep their own rate.
    """
    rate = None if optimizer.name == "sgd" else optimizer.learning_rate
    return optimizer.name, rate, optimizer.momentum if optimizer.name == "momentum" else None, optimizer.clip_value


class _State:
    """The variables of one stack: stacked weights, optimizer slots, the shared prefix, the step count, the inputs.

    Every stack has its own, so stacks train concurrently (`lanes`); they are arguments of the
    compiled epoch, not captured by it, so every stack of one shape shares one trace (`_Program`).
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]], features: tuple[int, ...], label_dtype: tf.DType) -> None:
        zeros = [np.zeros((1, *shape), np.float32) for shape in shapes]
        self.weights = tuple(_stacked(w) for w in zeros)
        self.first = tuple(_stacked(w) for w in zeros)  # SGD velocity / Adam's m
        self.second = tuple(_stacked(w) for w in zeros)  # Adam's v
        self.prefix = tuple(tf.Variable(np.zeros(shape, np.float32), trainable=False) for shape in shapes)  # shared layers
        self.steps = tf.Variable(0.0)  # the optimizer's iteration count (fresh per phase, as a recompile)
        self.x = tf.Variable(np.zeros((1, *features), np.float32), trainable=False, shape=tf.TensorShape([None, *features]))
        self.y = tf.Variable(tf.zeros([1], label_dtype), trainable=False, shape=tf.TensorShape([None]))

    def variables(self) -> tuple:
        """The argument the compiled functions take (a nested tuple of variables: traced by shape, not identity)."""
        return self.weights, self.first, self.second, self.prefix, self.steps, self.x, self.y


class _Program:
    """The compiled epochs of one stack shape, shared by every stack of that shape in this process.

    Tracing and optimising a compiled epoch costs seconds, more than a small race trains; stacks
    of one architecture, batch size and optimizer (every chunk of a race, every point of a sweep)
    call the same concrete functions with their own `_State`.
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]], activations: Sequence, optimizer: OptimizerSpec,
                 batch_size: int, features: tuple[int, ...], label_dtype: tf.DType) -> None:
        self.shapes, self.activations, self.optimizer, self.batch_size = list(shapes), list(activations), optimizer, batch_size
        self.features, self.label_dtype = features, label_dtype
        self.functions: dict[tuple, tuple] = {}
        self.lock = threading.Lock()

    def state(self) -> _State:
        return _State(self.shapes, self.features, self.label_dtype)

    def forward(self, weights: Sequence[tf.Variable], prefix: Sequence[tf.Variable], h: tf.Tensor, shared: int) -> tf.Tensor:
        """[K, n, features] -> [K, n, classes]; the first `shared` layers use the (identical) prefix weights."""
        for i, activation in enumerate(self.activations):
            if i < shared:
                kernel, bias = prefix[2 * i], prefix[2 * i + 1]
                flat = tf.reshape(h, [-1, kernel.shape[0]])
                h = tf.reshape(activation(tf.matmul(flat, kernel) + bias), tf.concat([tf.shape(h)[:-1], [kernel.shape[1]]], 0))
            else:
                h = activation(tf.matmul(h, weights[2 * i]) + weights[2 * i + 1][:, None, :])
        return h

    def update(self, variables: tuple, i: int, g: tf.Tensor, rate: tf.Tensor, rate_factor: tf.Tensor,
               multiplier: float = 1.0) -> None:
        """Keras' update rule for weight `i` (SGD: each copy at its own rate), as one fused kernel where TF has one.

        `multiplier` scales this layer's rate (discriminative rates): an optimizer of its own per layer
        group, as fastai's `lr_mult` does, not a scaled gradient (which Adam would undo and clipping distort).
        """
        weights, first, second, _, steps, _, _ = variables  # a stack's `_State.variables()`
        w, m, v, spec = weights[i], first[i], second[i], self.optimizer
        if spec.clip_value is not None:
            g = tf.clip_by_value(g, -spec.clip_value, spec.clip_value)  # element-wise, as Keras' clipvalue
        if spec.name == "sgd":
            w.assign_sub(g * _per_copy(rate * multiplier, w))
        elif spec.name == "momentum":  # Keras: m = momentum * m - lr * g; w += m
            tf.raw_ops.ResourceApplyKerasMomentum(var=w.handle, accum=m.handle, lr=spec.learning_rate * rate_factor * multiplier,
                                                  grad=g, momentum=tf.constant(spec.momentum, tf.float32))
        else:
            t = steps
            tf.raw_ops.ResourceApplyAdam(
                var=w.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(ADAM_BETA_1, t), beta2_power=tf.pow(ADAM_BETA_2, t),
                lr=spec.learning_rate * rate_factor * multiplier, beta1=tf.constant(ADAM_BETA_1),
                beta2=tf.constant(ADAM_BETA_2), epsilon=tf.constant(ADAM_EPSILON), grad=g)

    def epoch_functions(self, state: _State, trained: tuple[int, ...], shared: int, multipliers: tuple[float, ...]):
        """The compiled epoch and validation pass of a phase: `trained` are the indices into the weights that learn.

        `multipliers`: each dense layer's rate multiplier, bottom first (constants of the compiled epoch).
        Both take the stack's variables (`_State.variables()`) as their first argument.
        """
        with self.lock:  # two lanes asking for the same phase trace it once
            if (trained, shared, multipliers) not in self.functions:
                self.functions[trained, shared, multipliers] = self._trace(state, trained, shared, multipliers)
            return self.functions[trained, shared, multipliers]

    def _trace(self, state: _State, trained: tuple[int, ...], shared: int, multipliers: tuple[float, ...]):
        batch_size = self.batch_size

        # autograph=False: plain Python builds these graphs (the batch loop is an explicit tf.while_loop);
        # autograph's source conversion of every function they call was most of the tracing time
        @tf.function(autograph=False)
        def evaluate(variables: tuple, x_val: tf.Tensor, y_val: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            weights, _, _, prefix, _, _, _ = variables
            outputs = self.forward(weights, prefix, x_val, shared)
            loss = tf.reduce_mean(single.sparse_crossentropy(y_val, outputs), axis=-1)
            hit = tf.cast(tf.equal(tf.argmax(outputs, -1), tf.cast(y_val, tf.int64)), tf.float32)
            return loss, tf.reduce_mean(hit, axis=-1)

        @tf.function(autograph=False)
        def run_epoch(variables: tuple, order: tf.Tensor, rate: tf.Tensor, rate_factor: tf.Tensor):
            weights, _, _, prefix, steps, x, y = variables
            n = tf.shape(order)[1]

            def step(start: tf.Tensor, total_loss: tf.Tensor, correct: tf.Tensor):
                index = order[:, start : start + batch_size]
                inputs, labels = tf.gather(x, index), tf.gather(y, index)
                with tf.GradientTape() as tape:
                    watched = [weights[i] for i in trained]
                    tape.watch(watched)
                    outputs = self.forward(weights, prefix, inputs, shared)
                    per_example = single.sparse_crossentropy(labels, outputs)
                    loss = tf.reduce_sum(tf.reduce_mean(per_example, axis=-1))
                gradients = tape.gradient(loss, watched)
                steps.assign_add(1.0)
                for i, g in zip(trained, gradients, strict=True):
                    self.update(variables, i, g, rate, rate_factor, multipliers[i // 2])
                hit = tf.equal(tf.argmax(outputs, -1), tf.cast(labels, tf.int64))
                return (start + batch_size, total_loss + tf.reduce_sum(per_example, axis=-1),
                        correct + tf.reduce_sum(tf.cast(hit, tf.float32), axis=-1))

            zeros = tf.zeros_like(rate)
            _, total_loss, correct = tf.while_loop(
                lambda start, *_: start < n, step, (tf.constant(0), zeros, zeros),
                shape_invariants=(tf.TensorShape([]), tf.TensorShape([None]), tf.TensorShape([None])))
            count = tf.cast(n, tf.float32)
            return total_loss / count, correct / count

        # trace now, for any stack size, so the first epoch's time is training, not tracing
        variables = state.variables()
        run_epoch.get_concrete_function(variables, tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.float32),
                                        tf.TensorSpec([], tf.float32))
        evaluate.get_concrete_function(variables, tf.TensorSpec([None, None, *self.features], tf.float32),
                                       tf.TensorSpec([None, None], self.label_dtype))
        return run_epoch, evaluate


_PROGRAMS: dict[tuple, _Program] = {}
_PROGRAMS_LOCK = threading.Lock()


def _program(shapes: list[tuple[int, ...]], activations: list, optimizer: OptimizerSpec, batch_size: int,
             x: np.ndarray, y: np.ndarray) -> _Program:
    key = (tuple(shapes), tuple(activations), stack_key(optimizer), batch_size, x.shape[1:], y.dtype.str)
    with _PROGRAMS_LOCK:
        if key not in _PROGRAMS:
            _PROGRAMS[key] = _Program(shapes, activations, optimizer, batch_size, x.shape[1:], tf.as_dtype(y.dtype))
        return _PROGRAMS[key]


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
        self.program = _program([w.shape[1:] for w in self.best], activations, self.optimizer, batch_size, x, y)
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
            with _CORES:
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
