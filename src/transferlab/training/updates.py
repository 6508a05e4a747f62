"""Keras' optimizer update rules on stacked weights: SGD, momentum and Adam, with element-wise clipping.

The stacked-copies engine trains K copies at once, so it cannot call a Keras optimizer per copy;
these are Keras' rules written out for weights stacked on a leading copies axis (`[K, in, out]`),
each one fused TensorFlow kernel where TensorFlow has one. A test checks each stacked copy against
the same training run alone through Keras (tests/test_strategies.py, tests/test_blocks_and_rates.py).
"""
from __future__ import annotations

import tensorflow as tf

from transferlab.config import OptimizerSpec

ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7  # Keras' Adam defaults


def stack_key(optimizer: OptimizerSpec) -> tuple:
    """Copies that can share one stack: the same optimizer but for SGD's learning rate.

    Within a stack, Adam and momentum copies share their (scalar) rate and use TensorFlow's fused
    update kernels; plain SGD copies each keep their own rate.
    """
    rate = None if optimizer.name == "sgd" else optimizer.learning_rate
    return optimizer.name, rate, optimizer.momentum if optimizer.name == "momentum" else None, optimizer.clip_value


def _per_copy(vector: tf.Tensor, like: tf.Variable) -> tf.Tensor:
    """A [K] vector shaped to broadcast against a [K, ...] tensor."""
    return tf.reshape(vector, [-1] + [1] * (len(like.shape) - 1))


def apply(spec: OptimizerSpec, w: tf.Variable, m: tf.Variable, v: tf.Variable, steps: tf.Variable, g: tf.Tensor,
          rate: tf.Tensor, rate_factor: tf.Tensor, multiplier: float = 1.0) -> None:
    """Keras' update rule for one stacked weight `w` (SGD: each copy at its own `rate`), as one fused kernel where TF has one.

    `m`, `v`: its optimizer slots (SGD's velocity or Adam's m; Adam's v); `steps`: the iteration count.
    `multiplier` scales this layer's rate (discriminative rates): an optimizer of its own per layer
    group, as fastai's `lr_mult` does, not a scaled gradient (which Adam would undo and clipping distort).
    """
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
