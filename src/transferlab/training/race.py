"""The race that trains every variant the same way, whatever its strategy.

A strategy is a rule in `strategies.STRATEGIES`: the phases it trains (which blocks stay fixed,
for how long, at what share of the tuned rate) and whether the fixed blocks' outputs are cached. `race` builds the
variant's network once per repetition (from any Keras model's blocks), trains one copy of it per grid setting in
stacks (`engine.Copies` for a Dense chain, one compiled step per stack; `keras_copies.Copies` for any other
network; the stacks side by side, one per core), stops each copy by the one early-stopping rule, chooses each
repetition's setting on validation, puts its weights into the repetition's network and scores that once on the
test set.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from transferlab import data
from transferlab.config import (
    NetworkSpec,
    Protocol,
    VariantSpec,
    split_sizes,
    strategies,
)
from transferlab.data.repetitions import Repetition
from transferlab.errors import ModelError
from transferlab.models import networks, surgery
from transferlab.training import engine, keras_copies, single
from transferlab.training.results import (
    SCORES,
    RepetitionResult,
    SettingResult,
    first_near_best,
)
from transferlab.training.stopping import DIVERGED, StopRule


def build_variant_network(
    variant: VariantSpec, init_model: keras.Model, network: NetworkSpec, n_classes: int, seed: int,
    image_shape: tuple[int, ...] | None = None, patterns: Sequence[str] | None = None,
) -> tuple[keras.Model, surgery.Blocks]:
    """(the variant's network, its blocks): reused blocks (copied unless `scratch`), new layers, a new output; lowest blocks frozen.

    A Dense stack is rebuilt as one (`networks.build`, each Dense layer a block); any other model is
    cut into blocks (`surgery.variant_network`, `patterns` declaring them). `image_shape`: the target's
    images (H, W, C) (default: the init model's input).
    """
    rule = strategies.STRATEGIES[variant.strategy]
    copy = variant.strategy != "scratch"
    if not networks.is_dense_chain(init_model):
        model, blocks = surgery.variant_network(init_model, variant.reuse_layers, variant.new_hidden, network.activation,
                                                network.initializer, n_classes, seed, copy=copy, keep_output=rule.keeps_output,
                                                patterns=patterns)
    else:
        layers = networks.target_layers(init_model, variant.reuse_layers, variant.new_hidden, network.activation, n_classes)
        model = networks.build(image_shape or networks.input_shape(init_model), layers, network.initializer, seed)
        if copy:
            copied = [networks.hidden_name(i + 1) for i in range(variant.reuse_layers)]
            networks.copy_weights(init_model, model, copied + ([networks.OUTPUT] if rule.keeps_output else []))
        blocks = [(layer.name,) for layer in engine.dense_layers(model)]
    surgery.freeze(model, blocks, strategies.kept_fixed(variant), variant.train_bn)
    return model, blocks


@dataclass
class RaceOutcome:
    """Per repetition: the result, the chosen model (best weights), the chosen run's history, its labelled rows."""

    results: list[RepetitionResult]
    models: list[keras.Model]
    histories: list[list[dict[str, float]]]
    draws: list[tuple[np.ndarray, np.ndarray]]  # (training rows, validation rows) of the target pool
    trainable_params: int
    frozen_params: int
    split_per_class: tuple[int, int]  # (training, validation) labelled images per class (a mean, for labels `all`)


def _trainable(blocks: surgery.Blocks, trained: surgery.Blocks, fixed: Sequence[int]) -> list[str]:
    """The layers of the trained model's blocks `trained` that are not in the network's blocks numbered `fixed`."""
    names = {name for index in fixed for name in blocks[index - 1]}
    return [name for block in trained for name in block if name not in names]


def _timed(rows: Sequence[dict[str, float]], offset: float) -> list[dict[str, float]]:
    """The rows with `elapsed`: cumulative training seconds at the end of each epoch."""
    elapsed, out = offset, []
    for row in rows:
        elapsed += row["seconds"]
        out.append({**row, "elapsed": elapsed})
    return out


def _setting_result(label: str, rows: list[dict[str, float]], best_epoch: int, reason: str, converged: bool) -> SettingResult:
    best = next((row for row in rows if row["epoch"] == best_epoch), None)
    val_loss = best["val_loss"] if best is not None else float("inf")
    val_accuracy = best["val_accuracy"] if best is not None else 0.0
    return SettingResult(label, float(val_loss), float(val_accuracy), int(best_epoch), len(rows) and int(rows[-1]["epoch"]),
                         reason, bool(converged))


def race(
    variant: VariantSpec,
    init_model: keras.Model | Sequence[keras.Model],
    network: NetworkSpec,
    protocol: Protocol,
    arrays: Mapping[str, np.ndarray],
    labels_per_class: int | None,
    plan: Sequence[Repetition],
    patterns: Sequence[str] | None = None,
) -> RaceOutcome:
    """Train the variant for every repetition x grid setting, choose each repetition's setting on validation, test once.

    `init_model`: one model every repetition reuses layers from, or one per repetition (in plan order),
    as a selffer control reuses repetition r's own network trained on the target. `patterns`: the init
    model's declared blocks (its `model_files` entry's `blocks`); None finds them.
    """
    rule = strategies.STRATEGIES[variant.strategy]
    inits = [init_model] * len(plan) if isinstance(init_model, keras.Model) else list(init_model)
    if len(inits) != len(plan):
        raise ModelError(f"{len(inits)} init models for {len(plan)} repetitions: give one, or one per repetition")
    if rule.cached and len({id(model) for model in inits}) > 1:
        raise ModelError(f"strategy {variant.strategy} caches one init model's fixed layers: give one init model")
    x_pool, y_pool = arrays["x_pool"], arrays["y_pool"]
    n_classes = int(max(y_pool.max(), arrays["y_test"].max())) + 1
    if labels_per_class is None:  # every pool image is labelled; repetition i carves its own validation share
        draws = [data.draw_all(y_pool, protocol.validation_fraction, rep.labels_seed) for rep in plan]
    else:
        _, validation_per_class = split_sizes(labels_per_class, protocol.validation_fraction)
        draws = [data.draw_labelled(y_pool, labels_per_class, validation_per_class, rep.labels_seed) for rep in plan]
    split_per_class = data.split_per_class(y_pool, labels_per_class, protocol.validation_fraction)
    single.make_deterministic(plan[0].seed)
    keys = [(r, j) for r in range(len(plan)) for j in range(len(protocol.grid))]
    # one network per repetition: its grid settings start from the same weights (the same seed), and only
    # the chosen setting's weights end up in it
    image_shape = tuple(int(d) for d in x_pool.shape[1:])
    built = [build_variant_network(variant, inits[r], network, n_classes, rep.seed, image_shape, patterns)
             for r, rep in enumerate(plan)]
    models, blocks = [model for model, _ in built], built[0][1]
    dense = networks.is_dense_chain(models[0])  # the stacked Dense engine, or Keras' own layers for any other model
    copies = [engine.Copy(draws[r][0], draws[r][1], plan[r].seed, protocol.grid[j]) for r, j in keys]
    inputs, trained, trained_blocks, cache_seconds = x_pool, models, blocks, 0.0
    if rule.cached:  # the fixed blocks are the init model's, the same in every copy: one pass serves all
        start = time.perf_counter()
        inputs = single.predict(surgery.split_after(models[0], blocks, variant.frozen_layers)[0], x_pool)
        cache_seconds = time.perf_counter() - start
        trained = [surgery.split_after(model, blocks, variant.frozen_layers)[1] for model in models]
        trained_blocks = blocks[variant.frozen_layers:]
    stop = StopRule(protocol.stopping.max_epochs, protocol.stopping.patience, protocol.stopping.min_delta, protocol.stopping.monitor)
    histories: list[list[dict[str, float]]] = [[] for _ in keys]
    stopped: list[tuple[int, str, bool, float]] = [(0, "", False, 0.0)] * len(keys)  # best epoch, reason, converged, best value
    def train(members: list[int]) -> engine.Copies:  # one stack: its copies through every phase of the strategy
        own = [trained[keys[i][0]] for i in members], inputs, y_pool, [copies[i] for i in members], protocol.batch_size, stop
        stack = engine.Copies(*own) if dense else keras_copies.Copies(*own, trained_blocks, variant.train_bn)
        for phase in rule.phases(variant):
            multipliers = strategies.layer_multipliers(len(trained_blocks), phase.layer_decay)
            stack.train(_trainable(blocks, trained_blocks, phase.fixed), phase.epochs, phase.rate_factor, multipliers)
        return stack

    lanes = engine.lanes()
    groups = [[i for i, c in enumerate(copies) if engine.stack_key(c.optimizer) == key]
              for key in dict.fromkeys(engine.stack_key(o) for o in protocol.grid)]
    jobs = [members for group in groups for members in engine.chunks(group, len(copies))]
    stacks = engine.train_concurrently([lambda members=members: train(members) for members in jobs], lanes)
    where: dict[int, tuple[engine.Copies, int]] = {}  # copy -> its stack and position there
    for members, stack in zip(jobs, stacks, strict=True):
        converged = stack.stopper.converged()
        for pos, i in enumerate(members):
            where[i] = stack, pos
            histories[i] = _timed(stack.histories[pos].rows, cache_seconds / len(keys))
            stopped[i] = (int(stack.stopper.best_epoch[pos]), str(stack.stopper.stop_reason[pos]), bool(converged[pos]),
                          float(stack.stopper.best[pos]))
    chosen = []
    for r in range(len(plan)):
        finite = [i for i, (rr, _) in enumerate(keys) if rr == r and np.isfinite(stopped[i][3]) and histories[i]]
        if not finite:
            raise ModelError(f"repetition {r}: every grid setting diverged (non-finite validation loss); lower the learning rates")
        chosen.append((min if stop.lower_is_better else max)(finite, key=lambda i: stopped[i][3]))
    for r, i in enumerate(chosen):  # the chosen setting's best weights into repetition r's network
        stack, pos = where[i]
        stack.restore(pos, trained[r])
    score = engine.score if dense else keras_copies.score
    tests = score(models, arrays["x_test"], arrays["y_test"])  # the test set, once
    further = {name: score(models, *(arrays[key] for key in data.test_set_keys(name)))  # and each further
               for name in data.test_sets(arrays)}  # test set, once, in the target's order: nothing is chosen on any
    results, chosen_models, chosen_histories = [], [], []
    for r, rep in enumerate(plan):
        mine = [i for i, (rr, _) in enumerate(keys) if rr == r]
        settings = [_setting_result(protocol.grid[keys[i][1]].label, histories[i], *stopped[i][:3]) for i in mine]
        best, scores = chosen[r], tests[r]
        rows, (best_epoch, reason, converged, _) = histories[best], stopped[best]
        best_row = next(row for row in rows if row["epoch"] == best_epoch)
        near = rows[first_near_best([row["val_accuracy"] for row in rows])]
        results.append(RepetitionResult(
            repetition=rep.index, seed=rep.seed, labels_seed=rep.labels_seed, setting=settings[mine.index(best)].setting,
            target_accuracy=scores["accuracy"], target_loss=scores["loss"], val_accuracy=float(best_row["val_accuracy"]),
            evaluations={name: {score: scores[r][score] for score in SCORES} for name, scores in further.items()},
            val_loss=float(best_row["val_loss"]), best_epoch=best_epoch, epochs_run=int(rows[-1]["epoch"]),
            stop_reason=reason, converged=converged and reason != DIVERGED, train_seconds=float(rows[-1]["elapsed"]),
            seconds_to_best=float(best_row["elapsed"]), seconds_to_near_best=float(near["elapsed"]),
            seconds_per_epoch=float(np.median([row["seconds"] for row in rows])), settings=settings,
            val_accuracy_per_epoch=[round(float(row["val_accuracy"]), 6) for row in rows],
        ))
        chosen_models.append(models[r])
        chosen_histories.append(rows)
    trainable, frozen = networks.parameter_counts(models[0])
    return RaceOutcome(results, chosen_models, chosen_histories, draws, trainable, frozen, split_per_class)
