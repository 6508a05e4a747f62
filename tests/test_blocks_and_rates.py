"""Surgical fine-tuning (one block trained) and discriminative rates (per-layer multipliers) on real Keras:
every layer outside the block stays bit-identical; one step moves each layer by exactly its own rate."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_params
from test_strategies import LABELS, NETWORK, PLAN, PROTOCOL, arrays, source_model  # noqa: F401 (fixtures)

from transferlab.config import OptimizerSpec, VariantSpec, parse_params, strategies
from transferlab.errors import ConfigError
from transferlab.models import networks
from transferlab.training import engine, race, single
from transferlab.training.stopping import StopRule

ROWS = 16  # one batch: an epoch is exactly one step


def one_step_stack(optimizer: OptimizerSpec, multipliers: tuple[float, ...]):
    """A copy trained for one step with `multipliers`, and the gradient (of the same loss) at its starting weights."""
    rng = np.random.default_rng(3)
    x = rng.random((60, 20), dtype=np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64) + (x[:, 2] > 0.7).astype(np.int64)
    layers = networks.dnn_layers([12, 8], "relu", 3)
    model = networks.build(20, layers, "he_normal", seed=1)
    before = [w.copy() for w in model.get_weights()]
    rows = np.arange(ROWS)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(single.sparse_crossentropy(tf.constant(y[rows]), model(x[rows])))
    gradients = [g.numpy() for g in tape.gradient(loss, model.trainable_weights)]
    stack = engine.Copies([model], x, y, [engine.Copy(rows, np.arange(40, 60), 9, optimizer)], ROWS,
                           StopRule(max_epochs=1, patience=None))
    stack.train([layer.name for layer in engine.dense_layers(model)], epochs=1, multipliers=multipliers)
    stack.restore_best()
    return model, before, gradients


MULTIPLIERS = strategies.layer_multipliers(3, 0.5)  # hidden1 0.25, hidden2 0.5, output 1


def test_layer_multipliers_fall_by_the_decay_from_the_output_down() -> None:
    assert MULTIPLIERS == (0.25, 0.5, 1.0)
    assert strategies.layer_multipliers(4, 1.0) == (1.0,) * 4


@pytest.mark.parametrize("clip_value", [None, 0.01])
def test_one_sgd_step_moves_each_layer_by_its_rate_times_multiplier_times_clipped_gradient(clip_value) -> None:
    rate = 0.3
    model, before, gradients = one_step_stack(OptimizerSpec(name="sgd", learning_rate=rate, clip_value=clip_value), MULTIPLIERS)
    if clip_value is not None:
        assert any((np.abs(g) > clip_value).any() for g in gradients), "the clip must bite for this test to mean anything"
    for w, (old, new, g) in enumerate(zip(before, model.get_weights(), gradients, strict=True)):
        clipped = np.clip(g, -clip_value, clip_value) if clip_value is not None else g
        np.testing.assert_allclose(old - new, rate * MULTIPLIERS[w // 2] * clipped, rtol=1e-4, atol=1e-7)


def test_with_adam_each_layer_group_uses_its_own_rate() -> None:
    rate = 0.01
    model, before, gradients = one_step_stack(OptimizerSpec(name="adam", learning_rate=rate, clip_value=None), MULTIPLIERS)
    for w, (old, new, g) in enumerate(zip(before, model.get_weights(), gradients, strict=True)):
        variable = keras.Variable(old)  # Keras' own Adam at this layer group's rate, one step
        keras.optimizers.Adam(learning_rate=rate * MULTIPLIERS[w // 2]).apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
        np.testing.assert_allclose(new, variable.numpy(), rtol=1e-5, atol=1e-7)
        assert np.abs(old - new).max() == pytest.approx(rate * MULTIPLIERS[w // 2], rel=1e-3)  # Adam's first step: ~ its rate


def test_surgical_fine_tuning_leaves_every_layer_outside_its_block_bit_identical(source_model, arrays) -> None:
    variant = VariantSpec(strategy="surgical", init_from="source", target="t", reuse_layers=3, train_layers=[2, 2])
    outcome = race.race(variant, source_model, NETWORK, PROTOCOL, arrays, LABELS, PLAN)
    for model in outcome.models:
        for name in ("hidden1", "hidden3"):
            for a, b in zip(source_model.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True):
                assert np.array_equal(a, b), name
        assert not np.array_equal(source_model.get_layer("hidden2").get_weights()[0], model.get_layer("hidden2").get_weights()[0])
        assert not model.get_layer("hidden1").trainable and model.get_layer("hidden2").trainable
    assert outcome.frozen_params == sum(np.prod(w.shape) for n in ("hidden1", "hidden3") for w in source_model.get_layer(n).get_weights())


def test_a_race_with_layer_decay_barely_moves_the_lowest_layer(source_model, arrays) -> None:
    """A decay of 1e-3 gives hidden1 1e-9 of the rate: it stays put while the output layer learns."""
    variant = VariantSpec(strategy="discriminative", init_from="source", target="t", reuse_layers=3, layer_decay=1e-3)
    outcome = race.race(variant, source_model, NETWORK, PROTOCOL, arrays, LABELS, PLAN[:1])
    (model,) = outcome.models
    lowest = np.abs(model.get_layer("hidden1").get_weights()[0] - source_model.get_layer("hidden1").get_weights()[0]).max()
    assert lowest < 1e-6 and outcome.results[0].epochs_run > 1


@pytest.mark.parametrize(("variant", "line"), [
    ({"strategy": "surgical"}, "variants.v.train_layers: strategy surgical needs it"),
    ({"strategy": "surgical", "train_layers": [2, 4]},
     "variants.v.train_layers: [2, 4] is not a block of the 3 reused layers (1 <= low <= high <= reuse_layers)"),
    ({"strategy": "surgical", "train_layers": [3, 2]},
     "variants.v.train_layers: [3, 2] is not a block of the 3 reused layers (1 <= low <= high <= reuse_layers)"),
    ({"strategy": "reuse", "train_layers": [1, 1]}, "variants.v.train_layers: only strategy surgical takes this (strategy is reuse)"),
    ({"strategy": "discriminative"}, "variants.v.layer_decay: strategy discriminative needs it"),
    ({"strategy": "reuse", "layer_decay": 0.5},
     "variants.v.layer_decay: only strategy unfreeze, lp_ft, discriminative takes this (strategy is reuse)"),
    ({"strategy": "discriminative", "layer_decay": 1.5}, "variants.v.layer_decay"),
])
def test_bad_block_or_decay_is_one_line_naming_the_key(variant, line) -> None:
    params = tiny_params()
    params["variants"]["v"] = {"init_from": "source", "target": "mnist", "reuse_layers": 3, **variant}
    with pytest.raises(ConfigError) as error:
        parse_params(params)
    assert str(error.value).startswith(f"params.yaml: {line}") and "\n" not in str(error.value)


def test_the_surgical_sweep_mode_trains_one_block_of_the_whole_reused_network() -> None:
    from transferlab.training import sweeps

    params = tiny_params()
    params["sweeps"]["transferability"]["modes"] = ["frozen", "surgical"]
    points = [p for p in sweeps.transferability_points(parse_params(params), "transferability") if p.series == "surgical"]
    depth = len(params["sources"]["source"]["network"]["hidden_units"])
    assert [(p.x, p.variant.strategy, p.variant.reuse_layers, p.variant.train_layers) for p in points] == [
        (0, "scratch", 0, None), *((k, "surgical", depth, [k, k]) for k in params["sweeps"]["transferability"]["layers"][1:])]
    assert all(strategies.kept_fixed(p.variant) == tuple(i for i in range(1, depth + 1) if i != p.x) for p in points[1:])


def test_the_report_compares_each_new_family_with_full_fine_tuning_of_the_same_layers() -> None:
    from dataclasses import replace

    from test_reporting import SCRATCH, result

    from transferlab.report import families, verdicts

    reuse = result("reuse3", "reuse", [0.85, 0.88, 0.86])
    surgical = result("surgical2", "surgical", [0.80, 0.82, 0.81])
    decay = result("decay3", "discriminative", [0.84, 0.89, 0.86])
    stuck = replace(result("lp_ft3", "lp_ft", [0.9, 0.9, 0.9]), repetitions=result("x", "lp_ft", [0.9, 0.9, 0.9], unconverged=1).repetitions)
    specs = {"surgical2": VariantSpec(strategy="surgical", init_from="source", target="mnist", reuse_layers=3, new_hidden=[8],
                                      train_layers=[2, 2]),
             "decay3": VariantSpec(strategy="discriminative", init_from="source", target="mnist", reuse_layers=3, new_hidden=[8],
                                   layer_decay=0.5),
             "lp_ft3": VariantSpec(strategy="lp_ft", init_from="source", target="mnist", reuse_layers=3, new_hidden=[8])}
    sections = dict(families.paragraphs(verdicts.rank([SCRATCH, reuse, surgical, decay, stuck]), specs))
    assert list(sections) == ["Linear probe, then fine-tune (LP-FT)", "Surgical fine-tuning", "Discriminative learning rates"]
    (line,) = sections["Surgical fine-tuning"][1:]
    assert line.startswith("**surgical2** (only hidden2 of the 3 reused layers trained, with the new layers above): 81.0 %")
    assert ("against full fine-tuning of the same layers (reuse3): -5.3 [-6.8, -3.9] points, Holm p 0.008 (permutation 0.500),"
            " stable 100 %, less accurate.") in line  # two checks against full fine-tuning, corrected together
    (line,) = sections["Discriminative learning rates"][1:]
    assert "each at 0.5× the rate of the layer above, hidden1 at 0.0625× the output layer's)" in line and line.endswith("not distinguishable.")
    assert sections["Linear probe, then fine-tune (LP-FT)"][1].endswith("it has unconverged repetitions, so no claim.")
