"""The one training routine every strategy and pretraining method uses.

`fit` runs each epoch as a single compiled TensorFlow call (a `tf.while` loop over batches
gathered by index), so per-step Python and data-adapter overhead — which, for networks this
small, costs more than the arithmetic (bench/training_speed.py) — is paid once per epoch.
The batch order is a NumPy permutation drawn from (seed, epoch), never Keras' own shuffle, so
two models trained on different inputs of the same length (`freeze` on pixels, `cache` on
cached features) see the same examples in the same order.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from transferlab.config import OptimizerSpec, TrainSpec
from transferlab.errors import ModelError
from transferlab.training.stopping import EarlyStopping, StopRule

Arrays = np.ndarray | Sequence[np.ndarray]
LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
EpochCallback = Callable[[dict[str, float]], None]
EVAL_CHUNK = 8192


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic: same params, same metrics."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_optimizer(spec: OptimizerSpec, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
    rate = learning_rate if learning_rate is not None else spec.learning_rate
    clip = {"clipvalue": spec.clip_value} if spec.clip_value is not None else {}
    if spec.name == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, **clip)
    if spec.name == "momentum":
        return keras.optimizers.SGD(learning_rate=rate, momentum=spec.momentum, **clip)
    return keras.optimizers.Adam(learning_rate=rate, **clip)


@dataclass
class History:
    """Per-epoch rows (`epoch`, `loss`, `seconds`, [`accuracy`], [`val_…`], [`test_…`]) and the training time.

    With early stopping: `best_epoch` (whose weights the model holds) and `stop_reason`.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    best_epoch: int = 0
    stop_reason: str = ""

    @property
    def epochs(self) -> int:
        return len(self.rows)

    @property
    def seconds_per_epoch(self) -> float:
        """Median epoch time: robust to the first epoch, which also traces the compiled step."""
        return float(np.median([row["seconds"] for row in self.rows])) if self.rows else 0.0


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def sparse_crossentropy(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-example cross-entropy of softmax outputs against integer labels."""
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)


def _as_tuple(x: Arrays) -> tuple[np.ndarray, ...]:
    return (x,) if isinstance(x, np.ndarray) else tuple(x)


def _n_correct(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int64)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(y_true, tf.int64)), tf.float32))


def _epoch_function(model: keras.Model, optimizer: keras.optimizers.Optimizer, loss: LossFn, batch_size: int, accuracy: bool):
    variables = model.trainable_variables

    # autograph=False, the batch loop an explicit tf.while_loop: autograph's source conversion of
    # everything the step calls (Keras included) was most of the tracing time
    @tf.function(reduce_retracing=True, autograph=False)
    def run_epoch(xs: tuple[tf.Tensor, ...], y: tf.Tensor, order: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        n = tf.shape(order)[0]

        def step(start: tf.Tensor, total_loss: tf.Tensor, correct: tf.Tensor):
            index = order[start : start + batch_size]
            inputs = [tf.gather(x, index) for x in xs]
            labels = tf.gather(y, index)
            with tf.GradientTape() as tape:
                outputs = model(inputs[0] if len(inputs) == 1 else inputs, training=True)
                per_example = loss(labels, outputs)
                batch_loss = tf.reduce_mean(per_example)
            optimizer.apply_gradients(zip(tape.gradient(batch_loss, variables), variables))
            return (start + batch_size, total_loss + tf.reduce_sum(per_example),
                    correct + _n_correct(labels, outputs) if accuracy else correct)

        _, total_loss, correct = tf.while_loop(lambda start, *_: start < n, step,
                                               (tf.constant(0), tf.constant(0.0), tf.constant(0.0)))
        count = tf.cast(n, tf.float32)
        return total_loss / count, correct / count

    return run_epoch


_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward_function(model: keras.Model):
    """One traced inference function per model, reused across epochs and calls."""
    if model not in _FORWARD:
        _FORWARD[model] = tf.function(
            lambda inputs: model(inputs[0] if len(inputs) == 1 else list(inputs), training=False), reduce_retracing=True
        )
    return _FORWARD[model]


def predict(model: keras.Model, x: Arrays) -> np.ndarray:
    """Forward pass in inference mode, in chunks, without Keras' per-call `predict` overhead."""
    xs = _as_tuple(x)
    forward = _forward_function(model)
    chunks = [forward(tuple(tf.constant(a[i : i + EVAL_CHUNK]) for a in xs)) for i in range(0, len(xs[0]), EVAL_CHUNK)]
    return np.concatenate([np.asarray(c) for c in chunks])


def evaluate(model: keras.Model, x: Arrays, y: np.ndarray, loss: LossFn = sparse_crossentropy, accuracy: bool = True) -> dict[str, float]:
    outputs = predict(model, x)
    scores = {"loss": float(np.mean(loss(tf.constant(y), tf.constant(outputs))))}
    if accuracy:
        scores["accuracy"] = float(_n_correct(tf.constant(y), tf.constant(outputs))) / len(y)
    return scores


def fit(
    model: keras.Model,
    x: Arrays,
    y: np.ndarray,
    train: TrainSpec,
    *,
    epochs: int | None = None,
    first_epoch: int = 1,
    learning_rate: float | None = None,
    loss: LossFn = sparse_crossentropy,
    accuracy: bool = True,
    eval_data: tuple[Arrays, np.ndarray] | None = None,
    validation: tuple[Arrays, np.ndarray] | None = None,
) -> History:
    """Train `model`'s trainable layers on (x, y) for `epochs` (default `train.epochs`) with a fresh optimizer.

    Call again after changing `trainable` (the set of trained variables is fixed per call, as
    Keras' recompile would). `validation` is scored after each epoch (`val_loss`, `val_accuracy`);
    with `train.patience` it decides when to stop (`stopping.EarlyStopping`, the rule the batched
    trainer uses too) and the best epoch's weights are restored. `eval_data` is evaluated after
    each epoch for monitoring only (`test_…`; nothing is selected on it). Neither evaluation's
    time is counted in `train_seconds`.
    """
    xs = tuple(tf.constant(a) for a in _as_tuple(x))
    labels = tf.constant(y)
    optimizer = make_optimizer(train.optimizer, learning_rate)
    run_epoch = _epoch_function(model, optimizer, loss, train.batch_size, accuracy)
    history = History()
    last = first_epoch + (epochs or train.epochs) - 1
    stopper = None
    if validation is not None and train.patience is not None:
        stopper = EarlyStopping(StopRule(last, train.patience, 0.0, "val_loss"), 1)
        best_weights = model.get_weights()
    for epoch in range(first_epoch, last + 1):
        order = tf.constant(epoch_order(len(y), train.seed, epoch))
        start = time.perf_counter()
        epoch_loss, epoch_accuracy = run_epoch(xs, labels, order)
        row = {"epoch": epoch, "loss": float(epoch_loss)}  # float() waits for the epoch to finish
        if not np.isfinite(row["loss"]):  # a diverging rate is never a result
            raise ModelError(f"training diverged: the loss is {row['loss']} at epoch {epoch} (lower the learning rate)")
        row["seconds"] = time.perf_counter() - start
        history.train_seconds += row["seconds"]
        if accuracy:
            row["accuracy"] = float(epoch_accuracy)
        if validation is not None:
            scores = evaluate(model, validation[0], validation[1], loss, accuracy)
            row.update({f"val_{name}": value for name, value in scores.items()})
        if eval_data is not None:
            scores = evaluate(model, eval_data[0], eval_data[1], loss, accuracy)
            row.update({f"test_{name}": value for name, value in scores.items()})
        history.rows.append(row)
        if stopper is not None:
            if stopper.update(epoch, np.array([row["val_loss"]]))[0]:
                best_weights = model.get_weights()
            if not stopper.active[0]:
                break
    if stopper is not None:
        model.set_weights(best_weights)
        history.best_epoch, history.stop_reason = int(stopper.best_epoch[0]), str(stopper.stop_reason[0])
    else:
        history.best_epoch, history.stop_reason = history.epochs and int(history.rows[-1]["epoch"]), "fixed_epochs"
    return history
