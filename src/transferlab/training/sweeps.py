"""Sweeps: one grid of variants, each point run over the same paired repetitions, as tidy rows.

`transferability` (after Yosinski et al. 2014) reuses the lowest k hidden layers of the init
model, frozen or fine-tuned, with the layers above k re-created at the init model's sizes, so
every k has the same architecture. Its `selffer-*` modes are Yosinski's BnB / BnB+ controls: the
lowest k layers come from repetition r's own network B_r trained on the target, which is the k = 0
(scratch) point's chosen model of repetition r, raced on exactly that repetition's labelled
training images (validation images only for early stopping and the setting), never on test
images. `label_budget` runs configured variants at several
`labels_per_class`. Every point is raced by `race.race` under the same protocol
(validation split, early stopping, tuning grid) and repetition plan, so points are paired and
tuned exactly as the `transfer@<variant>` stages are. A point whose race is exactly a
`transfer@<variant>` stage's (`twins`: same variant spec, protocol, labels and target, so the same
repetition plan) is not raced twice: the sweep stage reads that stage's repetitions instead, when
its dvc.yaml entry depends on the variant's metrics file (so DVC runs the variant first, and reruns
the sweep when it changes). Importing this module starts neither TensorFlow nor matplotlib.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from transferlab import paths
from transferlab.config import (
    LabelBudgetSweep,
    Params,
    Protocol,
    TransferabilitySweep,
    VariantSpec,
)
from transferlab.data.repetitions import Repetition
from transferlab.errors import ConfigError

if TYPE_CHECKING:
    import keras

    from transferlab.config import NetworkSpec
    from transferlab.training.results import RepetitionResult


@dataclass(frozen=True)
class Point:
    """One grid point: a variant trained at `labels_per_class`, plotted at `x` in line `series`."""

    sweep: str
    x: int
    series: str
    variant: VariantSpec
    protocol: Protocol
    labels_per_class: int | None  # None: the whole pool
    # selffer controls: the point whose chosen model of repetition r is B_r, the network whose layers
    # this point reuses instead of the init model's (its k = 0 scratch point); None: the init model's
    selffer_from: Point | None = None


def init_hidden_units(params: Params, init_from: str) -> list[int]:
    if init_from in params.sources:
        return list(params.sources[init_from].network.hidden_units)
    return list(params.pretrain[init_from].hidden_units)


def spec_of(params: Params, name: str) -> TransferabilitySweep | LabelBudgetSweep:
    """Sweep `name`'s entry; one line when there is none or it is switched off."""
    if name not in params.sweeps:
        raise ConfigError("sweeps", f"{name!r} is not a sweep (choose from: {', '.join(params.sweeps) or 'none configured'})")
    if (spec := params.sweeps[name]) is None:
        raise ConfigError(f"sweeps.{name}", "is null: this sweep is switched off")
    return spec


def transferability_points(params: Params, name: str) -> list[Point]:
    """k = 0 … depth (or `layers`) × modes; k = 0 is the scratch baseline of every mode.

    At k > 0 a `surgical` point reuses every layer and trains only hidden k (Lee et al. 2023's single block).
    A `selffer-*` point with k > 0 names (`selffer_from`) the k = 0 point whose models it reuses.
    """
    spec = spec_of(params, name)
    units = init_hidden_units(params, spec.init_from)
    layers = spec.layers if spec.layers is not None else range(len(units) + 1)
    protocol, labels = params.protocol(), params.targets[spec.target].labels()
    points: list[Point] = []
    for k in layers:
        for mode in spec.modes:
            strategy = "scratch" if k == 0 else "surgical" if mode == "surgical" else "freeze" if mode.endswith("frozen") else "reuse"
            selffer_from = None
            if mode.startswith("selffer") and k > 0:  # k = 0 reuses nothing: the one scratch baseline of every mode
                selffer_from = Point(name, 0, mode, _variant(spec, units, 0, "scratch"), protocol, labels)
            points.append(Point(name, k, mode, _variant(spec, units, k, strategy), protocol, labels, selffer_from))
    return points


def _variant(spec: TransferabilitySweep, units: list[int], k: int, strategy: str) -> VariantSpec:
    if strategy == "surgical":  # every layer reused, the one block hidden k trained
        return VariantSpec(strategy=strategy, init_from=spec.init_from, target=spec.target, reuse_layers=len(units),
                           train_layers=[k, k])
    return VariantSpec(strategy=strategy, init_from=spec.init_from, target=spec.target, reuse_layers=k,
                       frozen_layers=k if strategy == "freeze" else 0, new_hidden=units[k:])


def label_budget_points(params: Params, name: str, pool_per_class: int) -> tuple[list[Point], list[dict[str, Any]]]:
    """Each variant at each budget the pool allows; budgets larger than the pool are skipped and returned."""
    spec = spec_of(params, name)
    budgets = [n for n in spec.labels_per_class if n <= pool_per_class]
    skipped = [
        {"x": n, "reason": f"labels_per_class {n} > {pool_per_class} pool images in the smallest class of {spec.target!r}"}
        for n in spec.labels_per_class if n > pool_per_class
    ]
    points = []
    for entry in spec.variants:
        # the variant's recipe (strategy, layers, init model, overrides) evaluated on the sweep's target
        variant = params.variants[entry].model_copy(update={"target": spec.target})
        points += [Point(name, n, entry, variant, params.protocol(variant), n) for n in budgets]
    return points, skipped


def grid(name: str, params: Params, pool_per_class: int) -> tuple[list[Point], list[dict[str, Any]]]:
    """The sweep's points and the grid values it had to skip."""
    if isinstance(spec_of(params, name), TransferabilitySweep):
        return transferability_points(params, name), []
    return label_budget_points(params, name, pool_per_class)


def variant_point(params: Params, name: str) -> Point:
    """Stage `transfer@<name>`'s race as a point: a sweep point with its race key is that race."""
    variant = params.variants[name]
    return Point("transfer", 0, name, variant, params.protocol(variant), params.targets[variant.target].labels())


def twins(points: Sequence[Point], params: Params) -> dict[RaceKey, str]:
    """The points' races that a `transfer@<variant>` stage runs too: race key -> the first such variant.

    Equal keys mean the same variant spec, protocol, labels per class and target (hence repetition
    plan), init model and data: the same copies, trained the same way, to the same bits.
    """
    standalone: dict[RaceKey, str] = {}
    for name in params.variants:
        standalone.setdefault(race_key(variant_point(params, name)), name)
    found = {}
    for point in points:
        if (key := race_key(point)) in standalone and point.selffer_from is None:
            found[key] = standalone[key]
    return found


def twin_metrics(name: str, params: Params) -> list[str]:
    """The metrics files and run records of the variants whose race sweep `name` would otherwise race again, as dvc.yaml deps."""
    points, _ = grid(name, params, pool_per_class=sys.maxsize)  # every budget of the grid: a skipped one costs nothing
    return [path.as_posix() for variant in dict.fromkeys(twins(points, params).values())
            for path in (paths.variant_metrics(variant), paths.variant_run(variant))]


@dataclass(frozen=True)
class Twin:
    """A point's race run by stage `transfer@<variant>`: its repetitions, read from that stage's metrics file."""

    variant: str
    run_id: str  # the stage's MLflow run
    repetitions: list[RepetitionResult]


def twin_races(points: Sequence[Point], params: Params, plan: Sequence[Repetition],
               declared: set[str]) -> tuple[dict[RaceKey, Twin], list[str]]:
    """The races of `twins` a sweep need not run, and one note per twin it must race itself, saying why.

    `declared`: the sweep stage's twin deps (`twin_metrics`, which `make pipeline` writes into dvc.yaml).
    A twin counts only when its metrics file and run record are among them (DVC then ran the variant's
    stage first, with these params and this code) and they describe this race (protocol, labels per
    class, repetition plan).
    """
    from transferlab import artifacts
    from transferlab.training.results import VariantResult

    by_key = {race_key(point): point for point in points}
    found: dict[RaceKey, Twin] = {}
    notes = []
    for key, variant in twins(points, params).items():
        path, record, point = paths.variant_metrics(variant), paths.variant_run(variant), by_key[key]
        if missing := [p for p in (path, record) if p.as_posix() not in declared or not p.is_file()]:
            notes.append(f"{point.series} x={point.x} is {variant}'s race, raced again here: {missing[0]} is not among this stage's deps (`make pipeline` adds it)")
            continue
        result = VariantResult.from_json(artifacts.read_json(path), artifacts.read_json(record))
        labels = "all" if point.labels_per_class is None else point.labels_per_class
        if (result.budget != point.protocol.budget() or result.labels_per_class != labels
                or [(r.repetition, r.seed, r.labels_seed) for r in result.repetitions]
                != [(rep.index, rep.seed, rep.labels_seed) for rep in plan]):
            notes.append(f"{point.series} x={point.x} is {variant}'s race, raced again here: {path} holds another race")
            continue
        found[key] = Twin(variant, result.mlflow_run_id, result.repetitions)
    return found, notes


def pool_per_class(y_pool: np.ndarray) -> int:
    """Labelled-pool images in the smallest class: the largest `labels_per_class` every class allows."""
    return int(np.unique(y_pool, return_counts=True)[1].min())


OnPoint = Callable[[Point, list[dict[str, Any]]], None]


def run_sweep(
    points: Sequence[Point],
    plan: Sequence[Repetition],
    init_models: Mapping[str, keras.Model],
    networks: Mapping[str, NetworkSpec],  # per init model: how grafted layers are made (`Params.network_for`)
    arrays: Mapping[str, np.ndarray],
    on_point: OnPoint | None = None,
    init_files: Mapping[str, Path] | None = None,
    known: Mapping[RaceKey, Sequence[RepetitionResult]] | None = None,
    patterns: Mapping[str, Sequence[str] | None] | None = None,
) -> list[dict[str, Any]]:
    """Race every point over the same repetitions; returns one tidy row per repetition and point.

    `known`: races already run elsewhere (a twin `transfer@<variant>` stage's repetitions), not raced again.
    `patterns`: per init model, its declared blocks (`model_files.<name>.blocks`); absent or None: found.

    Points with identical settings (k = 0 is the scratch baseline of every mode) are raced once
    and their rows reused, so the lines of a figure share that point exactly. A selffer point is
    raced after its `selffer_from` point (raced even when the grid has no k = 0), from that race's
    chosen model of each repetition. With `RAY_ADDRESS` set (and the init models' files given) the
    races run as Ray tasks (`fanout`), same rows.
    """
    from transferlab.training import fanout

    known = dict(known or {})
    schedule: dict[RaceKey, Point] = {}  # every race once, each selffer source before the points that reuse it
    for point in points:
        if point.selffer_from is not None:  # raced here even when known: its chosen networks are needed
            schedule.setdefault(race_key(point.selffer_from), point.selffer_from)
        if race_key(point) not in known:
            schedule.setdefault(race_key(point), point)
    sources = {key: race_key(point.selffer_from) for key, point in schedule.items() if point.selffer_from is not None}
    if fanout.address() and init_files is not None:
        # B models never come back to this process: each source task returns its chosen models'
        # .keras bytes as a Ray object, which Ray hands to the selffer tasks that need it
        keys = list(schedule)
        jobs = [(point.variant, point.protocol, point.labels_per_class) for point in schedule.values()]
        after = {keys.index(key): keys.index(source) for key, source in sources.items()}
        raced = zip(keys, fanout.race_on_cluster(jobs, plan, init_files, networks, arrays, after, patterns), strict=True)
    else:
        raced = _race_in_process(schedule, sources, plan, init_models, networks, arrays, patterns or {})
    done: dict[RaceKey, Sequence[Any]] = dict(known)
    rows: list[dict[str, Any]] = []
    for point in points:
        key = race_key(point)
        while key not in done:  # races come back in schedule order
            raced_key, results = next(raced)
            done[raced_key] = results
        point_rows = [
            {"sweep": point.sweep, "x": point.x, "series": point.series, "repetition": run.repetition,
             "seed": run.seed, "labels_seed": run.labels_seed, "labels_per_class": point.labels_per_class,
             "setting": run.setting, "target_accuracy": run.target_accuracy, "target_loss": run.target_loss,
             "val_accuracy": run.val_accuracy, "best_epoch": run.best_epoch, "epochs_run": run.epochs_run,
             "stop_reason": run.stop_reason, "converged": run.converged, "train_seconds": run.train_seconds,
             "seconds_to_near_best": run.seconds_to_near_best}
            for run in done[key]
        ]
        rows += point_rows
        if on_point is not None:
            on_point(point, point_rows)
    return rows


RaceKey = tuple[bool, str, str, int | None]  # (selffer, variant, protocol, labels per class)


def race_key(point: Point) -> RaceKey:
    return point.selffer_from is not None, point.variant.model_dump_json(), point.protocol.model_dump_json(), point.labels_per_class


def _race_in_process(schedule: Mapping[RaceKey, Point], sources: Mapping[RaceKey, RaceKey], plan: Sequence[Repetition],
                     init_models: Mapping[str, keras.Model], networks: Mapping[str, NetworkSpec],
                     arrays: Mapping[str, np.ndarray], patterns: Mapping[str, Sequence[str] | None]) -> Iterator[tuple[RaceKey, list[Any]]]:
    """Race the scheduled points, one per core at a time, yielded in schedule order: a selffer point waits for its
    source race and reuses that race's chosen model of each repetition (races never wait on one queued behind them)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from transferlab.models import networks as layers
    from transferlab.training import engine, race

    races: dict[RaceKey, Future] = {}

    def run(key: RaceKey, point: Point) -> tuple[list[Any], list[keras.Model]]:
        variant, selffer = point.variant, key in sources  # a selffer point reuses B_r, whose blocks are found
        init = races[sources[key]].result()[1] if selffer else init_models[variant.init_from]
        outcome = race.race(variant, init, networks[variant.init_from], point.protocol, arrays, point.labels_per_class, plan,
                            None if selffer else patterns.get(variant.init_from))
        reused = [layers.as_init_model(model) for model in outcome.models] if key in sources.values() else []
        return outcome.results, reused  # reused: B_r of each repetition r, for the selffer points

    with ThreadPoolExecutor(max_workers=engine.lanes(), thread_name_prefix="race") as pool:
        for key, point in schedule.items():
            races[key] = pool.submit(run, key, point)
        for key in schedule:
            yield key, races[key].result()[0]
