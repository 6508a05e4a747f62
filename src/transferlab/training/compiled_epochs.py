"""The compiled epochs of a stack of copies, traced once per stack shape and shared by every stack of it.

Tracing and optimising a compiled epoch costs seconds, more than a small race trains. Each stack owns
its variables (`State`: stacked weights, optimizer slots, inputs) and passes them to compiled
functions shared by every stack of the same architecture, batch size and optimizer in the process
(`Program`, cached by `program`): every chunk of a race, every point of a sweep. The stacked
variables have a dynamic leading (copies) axis, so a smaller stack needs no new trace.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from transferlab.config import OptimizerSpec
from transferlab.training import single, updates


def _stacked(value: np.ndarray) -> tf.Variable:
    """A variable whose leading (copies) axis may shrink without retracing the compiled epoch."""
    return tf.Variable(value, trainable=False, shape=tf.TensorShape([None, *value.shape[1:]]))


class State:
    """The variables of one stack: stacked weights, optimizer slots, the shared prefix, the step count, the inputs.

    Every stack has its own, so stacks train concurrently (`lanes`); they are arguments of the
    compiled epoch, not captured by it, so every stack of one shape shares one trace (`Program`).
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


class Program:
    """The compiled epochs of one stack shape, shared by every stack of that shape in this process.

    Tracing and optimising a compiled epoch costs seconds, more than a small race trains; stacks
    of one architecture, batch size and optimizer (every chunk of a race, every point of a sweep)
    call the same concrete functions with their own `State`.
    """

    def __init__(self, shapes: Sequence[tuple[int, ...]], activations: Sequence, optimizer: OptimizerSpec,
                 batch_size: int, features: tuple[int, ...], label_dtype: tf.DType) -> None:
        self.shapes, self.activations, self.optimizer, self.batch_size = list(shapes), list(activations), optimizer, batch_size
        self.features, self.label_dtype = features, label_dtype
        self.functions: dict[tuple, tuple] = {}
        self.lock = threading.Lock()

    def state(self) -> State:
        return State(self.shapes, self.features, self.label_dtype)

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

    def epoch_functions(self, state: State, trained: tuple[int, ...], shared: int, multipliers: tuple[float, ...]):
        """The compiled epoch and validation pass of a phase: `trained` are the indices into the weights that learn.

        `multipliers`: each dense layer's rate multiplier, bottom first (constants of the compiled epoch).
        Both take the stack's variables (`State.variables()`) as their first argument.
        """
        with self.lock:  # two lanes asking for the same phase trace it once
            if (trained, shared, multipliers) not in self.functions:
                self.functions[trained, shared, multipliers] = self._trace(state, trained, shared, multipliers)
            return self.functions[trained, shared, multipliers]

    def _trace(self, state: State, trained: tuple[int, ...], shared: int, multipliers: tuple[float, ...]):
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
            weights, first, second, prefix, steps, x, y = variables
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
                    updates.apply(self.optimizer, weights[i], first[i], second[i], steps, g, rate, rate_factor, multipliers[i // 2])
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


_PROGRAMS: dict[tuple, Program] = {}
_PROGRAMS_LOCK = threading.Lock()


def program(shapes: list[tuple[int, ...]], activations: list, optimizer: OptimizerSpec, batch_size: int,
            x: np.ndarray, y: np.ndarray) -> Program:
    """The process's one `Program` for stacks of this shape (weight shapes, activations, optimizer, batch, inputs)."""
    key = (tuple(shapes), tuple(activations), updates.stack_key(optimizer), batch_size, x.shape[1:], y.dtype.str)
    with _PROGRAMS_LOCK:
        if key not in _PROGRAMS:
            _PROGRAMS[key] = Program(shapes, activations, optimizer, batch_size, x.shape[1:], tf.as_dtype(y.dtype))
        return _PROGRAMS[key]
