"""K copies of any Keras model trained through one compiled program: the engine for every model that is not a plain Dense stack.

A CNN with BatchNormalization, a residual network, a Dense stack with Dropout: whatever built-in
layers a model has, Keras runs them itself, so nothing is re-implemented and nothing is skipped.
Each stack owns one clone of the architecture (its *program*) and one Keras optimizer; every copy
keeps its own weights, BatchNormalization statistics, Dropout seed state and optimizer state as
tensors, passed into the compiled epoch with its batch order and handed back out of it (one call per
copy-epoch; the epoch is traced once per phase, not once per copy). So each copy trains exactly as
it would alone, with the same rows, batch order, optimizer, early-stopping rule and best-weights
restore as `engine.Copies`, whose interface this class shares; the race takes this class for any
network that is not a Dense chain (`networks.is_dense_chain`).

Blocks are the unit a phase fixes or trains (`models/blocks.py`). The lowest fixed blocks run in
inference mode (Keras' transfer-learning rule: a frozen base is called with `training=False`, so its
BatchNormalization statistics stay fixed and its Dropout is off); with `train_bn` their
normalization layers train and update their statistics (fastai's `train_bn`) while every other layer
there (Dropout, noise) stays in inference mode. A fixed block above a trained one (`surgical`) keeps
its weights and, as any non-trainable Keras BatchNormalization, its statistics; with `train_bn` its
normalization trains too.
Per-block rates (`layer_decay`) scale each variable's update, which equals scaling its learning rate
for SGD, momentum and Adam. The training objective is the cross-entropy plus the model's own
regularization losses, as `model.fit` minimises; the scored loss is the cross-entropy alone.
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from transferlab.models import blocks as model_blocks
from transferlab.training import single
from transferlab.training.engine import CopyHistory
from transferlab.training.lanes import CORES
from transferlab.training.stopping import EarlyStopping, StopRule
from transferlab.training.updates import stack_key

Blocks = Sequence[Sequence[str]]  # each block's layer names, lowest block first


class Copies:
    """K Keras models of one architecture trained through one program; `engine.Copies`' interface."""

    def __init__(self, models: Sequence[keras.Model], x: np.ndarray, y: np.ndarray, copies: Sequence, batch_size: int,
                 rule: StopRule, blocks: Blocks, train_bn: bool = False) -> None:
        if len(models) != len(copies) or not models:
            raise ValueError(f"{len(models)} models for {len(copies)} copies")
        if len({len(c.rows) for c in copies}) != 1 or len({len(c.val_rows) for c in copies}) != 1:
            raise ValueError("every copy needs the same number of training and validation rows")
        if len({stack_key(c.optimizer) for c in copies}) != 1:
            raise ValueError("one optimizer per stack (but SGD's rate)")
        self.models, self.copies, self.batch_size, self.k = list(models), list(copies), batch_size, len(copies)
        self.blocks, self.train_bn = [tuple(block) for block in blocks], train_bn
        self.program = keras.models.clone_model(self.models[0])  # its own layers: stacks train side by side
        shapes = [tuple(v.shape) for v in self.program.variables]
        self.best = [[v.numpy() for v in model.variables] for model in self.models]
        for weights in self.best:
            if [w.shape for w in weights] != shapes:
                raise ValueError("the copies' models are not one architecture")
        self.best = [[tf.constant(w) for w in weights] for weights in self.best]  # immutable: kept without copying
        self.x, self.y = tf.constant(x), tf.constant(y)
        self.x_val = [tf.constant(x[c.val_rows]) for c in copies]
        self.y_val = [tf.constant(y[c.val_rows]) for c in copies]
        self.stopper = EarlyStopping(rule, self.k)
        self.histories = [CopyHistory() for _ in copies]
        self.epoch = 0
        self.rates = np.array([c.optimizer.learning_rate for c in copies], dtype=np.float32)
        self._validate = tf.function(self._scores, reduce_retracing=True, autograph=False)

    def train(self, trainable: Sequence[str], epochs: int | None = None, rate_factor: float = 1.0,
              multipliers: Sequence[float] | None = None) -> None:
        """One phase: train the named layers of every copy until each stops, or for exactly `epochs` epochs.

        `multipliers`: one rate multiplier per block, lowest first (default all 1). Each phase starts
        a fresh optimizer state from each copy's best weights so far, as a Keras recompile does.
        """
        multipliers = tuple(float(m) for m in multipliers) if multipliers is not None else (1.0,) * len(self.blocks)
        if len(multipliers) != len(self.blocks):
            raise ValueError(f"{len(multipliers)} rate multipliers for {len(self.blocks)} blocks")
        run_epoch = self._phase(set(trainable), multipliers)
        if self.epoch:
            self.stopper.start_phase()
        last = self.epoch + epochs if epochs is not None else self.stopper.rule.max_epochs
        n = len(self.copies[0].rows)
        current = list(self.best)
        fresh = [tf.zeros(tuple(v.shape), v.dtype) for v in self.optimizer.variables]
        state = [fresh] * self.k
        while self.stopper.active.any() and self.epoch < last:
            self.epoch += 1
            stack = np.flatnonzero(self.stopper.active)
            scores = np.zeros((4, len(stack)))  # loss, accuracy, val_loss, val_accuracy
            seconds = 0.0
            for pos, k in enumerate(stack):
                order = tf.constant(self.copies[k].rows[single.epoch_order(n, self.copies[k].seed, self.epoch)].astype(np.int32))
                rate = tf.constant(self.rates[k] * rate_factor, tf.float32)
                with CORES:  # one call: copy k's state in, its epoch, its state out
                    start = time.perf_counter()
                    loss, accuracy, current[k], state[k] = run_epoch(self.x, self.y, order, rate, current[k], state[k])
                    scores[:2, pos] = float(loss), float(accuracy)  # waits for the epoch
                    seconds += time.perf_counter() - start
                    scores[2:, pos] = [float(t) for t in self._validate(self.x_val[k], self.y_val[k])]  # copy k is in
            monitored = np.full(self.k, np.nan)
            monitored[stack] = scores[2] if self.stopper.rule.monitor == "val_loss" else scores[3]
            improved = self.stopper.update(self.epoch, monitored, last, may_stop=epochs is None)[stack]
            for pos, k in enumerate(stack):
                if improved[pos]:
                    self.best[k] = current[k]
                self.histories[k].rows.append({
                    "epoch": self.epoch, "loss": scores[0, pos], "accuracy": scores[1, pos], "val_loss": scores[2, pos],
                    "val_accuracy": scores[3, pos], "seconds": seconds / len(stack),
                })

    def _scores(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(cross-entropy, accuracy) of the program's current copy on (x, y), in inference mode."""
        outputs = self.program(x, training=False)
        return (tf.reduce_mean(single.sparse_crossentropy(y, outputs)),
                single._n_correct(y, outputs) / tf.cast(tf.shape(y)[0], tf.float32))

    def _phase(self, trainable: set[str], multipliers: tuple[float, ...]):
        """The compiled epoch of one phase: which layers train, which lowest blocks run in inference mode."""
        program, normalization = self.program, model_blocks.NORMALIZATION
        fixed_prefix = 0
        while fixed_prefix < len(self.blocks) and not trainable.intersection(self.blocks[fixed_prefix]):
            fixed_prefix += 1
        if fixed_prefix == len(self.blocks):
            raise ValueError("a phase that trains no block")
        for layer in program.layers:
            layer.trainable = layer.name in trainable or (self.train_bn and isinstance(layer, normalization))
        lower = upper = None
        if fixed_prefix:  # the frozen base, called in inference mode (Keras' rule), unless its normalization trains
            cut = program.get_layer(self.blocks[fixed_prefix - 1][-1]).output
            lower = keras.Model(program.inputs[0], cut)
            upper = keras.Model(cut, program.outputs[0])
            if self.train_bn:  # called in training mode for its normalization: every other layer kept in inference mode
                lower = keras.models.clone_model(lower, clone_function=_normalization_trains)
        block_of = {name: b for b, block in enumerate(self.blocks) for name in block}
        variables = program.trainable_variables
        owner = {id(v): layer.name for layer in program.layers for v in layer.trainable_variables}
        scale = [multipliers[block_of[owner[id(v)]]] for v in variables]
        optimizer = self.optimizer = single.make_optimizer(self.copies[0].optimizer)  # a fresh one per phase, as a recompile
        optimizer.build(variables)
        batch_size, train_bn = self.batch_size, self.train_bn

        def forward(inputs: tf.Tensor) -> tf.Tensor:
            if lower is None:
                return program(inputs, training=True)
            return upper(lower(inputs, training=train_bn), training=True)

        every, slots = program.variables, optimizer.variables

        @tf.function(reduce_retracing=True, autograph=False)
        def run_epoch(x: tf.Tensor, y: tf.Tensor, order: tf.Tensor, rate: tf.Tensor, values: list, state: list):
            for variable, value in zip(every, values, strict=True):  # the copy's weights, statistics, Dropout state
                variable.assign(value)
            for variable, value in zip(slots, state, strict=True):  # its optimizer state
                variable.assign(value)
            optimizer.learning_rate.assign(rate)
            n = tf.shape(order)[0]

            def step(start: tf.Tensor, total_loss: tf.Tensor, correct: tf.Tensor):
                index = order[start : start + batch_size]
                inputs, labels = tf.gather(x, index), tf.gather(y, index)
                with tf.GradientTape() as tape:
                    outputs = forward(inputs)
                    per_example = single.sparse_crossentropy(labels, outputs)
                    objective = tf.reduce_mean(per_example)
                    if program.losses:  # the layers' own regularization, as model.fit adds it
                        objective += tf.add_n(program.losses)
                before = [tf.identity(v) for v, m in zip(variables, scale, strict=True) if m != 1.0]
                optimizer.apply_gradients(zip(tape.gradient(objective, variables), variables))
                scaled = [v for v, m in zip(variables, scale, strict=True) if m != 1.0]
                for variable, old, m in zip(scaled, before, [m for m in scale if m != 1.0], strict=True):
                    variable.assign(old + m * (variable - old))
                return (start + batch_size, total_loss + tf.reduce_sum(per_example),
                        correct + single._n_correct(labels, outputs))

            _, total, correct = tf.while_loop(lambda start, *_: start < n, step,
                                              (tf.constant(0), tf.constant(0.0), tf.constant(0.0)))
            count = tf.cast(n, tf.float32)
            with tf.control_dependencies([total, correct]):
                return (total / count, correct / count, [tf.identity(v.value) for v in every],
                        [tf.identity(v.value) for v in slots])

        return run_epoch

    def best_weights(self, k: int) -> list[np.ndarray]:
        """Copy k's best-epoch values of every model variable (BatchNormalization statistics included), Keras' order."""
        return [np.array(w) for w in self.best[k]]

    def restore(self, k: int, model: keras.Model) -> None:
        """Copy k's best weights and statistics into `model` (its architecture)."""
        for variable, value in zip(model.variables, self.best[k], strict=True):
            variable.assign(value)


def _normalization_trains(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A `clone_model` clone function sharing every layer: a normalization as it is, any other layer with a
    training mode (Dropout, noise, augmentation, a nested model) wrapped to run in inference mode."""
    if isinstance(layer, model_blocks.NORMALIZATION) or "training" not in inspect.signature(layer.call).parameters:
        return layer
    return _InferenceMode(layer)


class _InferenceMode(keras.layers.Layer):
    """`layer` (its own weights, shared) called with `training=False` whatever the mode of the model around it."""

    def __init__(self, layer: keras.layers.Layer) -> None:
        super().__init__(name=f"{layer.name}_inference")
        self.inner = layer

    def call(self, inputs):
        return self.inner(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)


def score(models: Sequence[keras.Model], x: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    """Loss (cross-entropy) and accuracy of each model (one architecture) on (x, y), in inference mode: Keras' `evaluate`.

    One clone of the architecture is traced once and each model's variables are put into it in turn.
    """
    program = keras.models.clone_model(models[0])
    forward = tf.function(lambda inputs: program(inputs, training=False), reduce_retracing=True, autograph=False)
    inputs, labels, scores = tf.constant(x), tf.constant(y), []
    for model in models:
        for variable, value in zip(program.variables, model.variables, strict=True):
            variable.assign(value)
        outputs = np.concatenate([np.asarray(forward(inputs[i : i + single.EVAL_CHUNK]))
                                  for i in range(0, len(x), single.EVAL_CHUNK)])
        scores.append({"loss": float(np.mean(single.sparse_crossentropy(labels, tf.constant(outputs)))),
                       "accuracy": float(single._n_correct(labels, tf.constant(outputs))) / len(y)})
    return scores
