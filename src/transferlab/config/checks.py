"""The cross-field rules `parse_params` runs once pydantic has read each field: names, references
between sections, each strategy's demands (its table entry), datasets, further test sets, sweeps.

Each rule raises a one-line ConfigError naming the key path (`variants.freeze2.frozen_layers: 4 >
reuse_layers 3`).
"""
from __future__ import annotations

import re
from typing import Any

from transferlab.config.base import BUILTIN_INIT, OptimizerSpec
from transferlab.config.datasets import check_entry, has_test_part
from transferlab.config.inputs import (
    PATCH_GRID,
    RESERVED_SETS,
    EvaluationSpec,
    ImageData,
    SourceSpec,
    TargetSpec,
)
from transferlab.config.schema import (
    VARIANT_SECTIONS,
    OriginalNoteSpec,
    Params,
    TransferabilitySweep,
    VariantSpec,
    default_source,
    target_classes,
    target_dataset,
)
from transferlab.config.strategies import STRATEGIES
from transferlab.errors import ConfigError

# Entry names become file names (models/<name>.keras) and stage names (transfer@<name>).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A name becomes file names (`models/transfer/<name>.keras` and its `.<name>.XXXXXXXX.keras` temp
# twin), DVC stage names and MLflow names: 255-byte file names ran out at ~240 characters, at run time.
MAX_NAME_LENGTH = 64
ENTRY_SECTIONS = ("sources", "targets", "variants", "pretrain", "zoo", "model_files")


def check_name(key: str, name: str) -> None:
    """An entry name must be a plain identifier: it becomes a file name and a DVC stage name."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ConfigError(key, f"{name!r} is not a plain name (letters, digits, _; not starting with a digit)")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(key, f"a name of {len(name)} characters: at most {MAX_NAME_LENGTH} (it becomes file and stage names)")


def check_consistency(params: Params) -> None:
    """Cross-field rules pydantic cannot see one field at a time."""
    for section in ENTRY_SECTIONS:
        for name in getattr(params, section):
            check_name(f"{section}.{name}", name)
    for name, source in params.sources.items():
        _check_source(f"sources.{name}", source)
    for name, target in params.targets.items():
        _check_target(params, name, target)
    seen: dict[str, str] = {}
    for section in ("sources", "pretrain", "zoo", "model_files"):
        for name in getattr(params, section):
            if name in seen:
                raise ConfigError(f"{section}.{name}", f"name already used by {seen[name]} (models/{name}.keras)")
            seen[name] = f"{section}.{name}"
    for name, spec in params.pretrain.items():
        if spec.target not in params.targets:
            raise ConfigError(f"pretrain.{name}.target", f"{spec.target!r} is not in targets ({', '.join(params.targets)})")
        depth = len(default_source(params, f"pretrain.{name}").network.hidden_units)
        if len(spec.hidden_units) > depth:
            raise ConfigError(
                f"pretrain.{name}.hidden_units",
                f"depth {len(spec.hidden_units)} > {depth} hidden layers of the target network (sources.{BUILTIN_INIT}.network)",
            )
    for name, entry in params.zoo.items():
        default_source(params, f"zoo.{name}")  # sklearn_mlp trains on it, a registry entry is checked against it
    _check_grid("transfer.grid", params.transfer.grid)
    for name, target in params.targets.items():
        if target.labels() is not None:
            check_labels(f"targets.{name}.labels_per_class", target.labels(), params.transfer.validation_fraction)
    for name, variant in params.variants.items():
        _check_variant(params, name, variant)
    _check_sweeps(params)
    if params.original_note is not None:
        _check_note(params, params.original_note)


def _check_source(key: str, source: SourceSpec) -> None:
    data = source.data
    _check_image_data(f"{key}.data", data.dataset, data)
    if len(set(data.classes)) != len(data.classes):
        raise ConfigError(f"{key}.data.classes", "a class is listed twice")
    if data.split == "official" and not has_test_part(data.dataset, data.npz_keys()):
        raise ConfigError(f"{key}.data.split", f"official: {data.dataset} has no test part of its own (use seeded)")


def _check_target(params: Params, name: str, target: TargetSpec) -> None:
    key = f"targets.{name}"
    if target.source not in params.sources:
        raise ConfigError(f"{key}.source", f"{target.source!r} is not in sources ({', '.join(params.sources)})")
    source = params.sources[target.source].data
    if target.split == "source":
        if target.dataset != "source":
            raise ConfigError(f"{key}.split", f"source: the source's own task needs dataset source (not {target.dataset})")
        if "classes" in target.model_fields_set and target.classes != source.classes:
            raise ConfigError(f"{key}.classes", f"{target.classes}: split source is {target.source}'s task, classes {source.classes}")
    elif target.dataset == "source" and set(target.classes) & set(source.classes):
        overlap = sorted(set(target.classes) & set(source.classes))
        raise ConfigError(f"{key}.classes", f"{overlap} are also classes of sources.{target.source} (allowed only with split: source)")
    if len(set(target.classes)) != len(target.classes):
        raise ConfigError(f"{key}.classes", "a class is listed twice")
    _check_image_data(key, target.dataset, target)
    dataset, data = target_dataset(params, name)
    if target.dataset == "source" and any(isinstance(c, str) for c in target.classes) != any(isinstance(c, str) for c in source.classes):
        raise ConfigError(f"{key}.classes", "name classes as the source does: all folder names or all numbers")
    if target.split == "official" and not has_test_part(dataset, data.npz_keys()):
        raise ConfigError(f"{key}.split", f"official: {dataset} has no test part of its own (use seeded)")
    for test_set, spec in target.evaluations.items():
        _check_evaluation(f"{key}.evaluations.{test_set}", test_set, spec, target.size())


def _check_image_data(key: str, dataset: str, data: ImageData) -> None:
    """The dataset kind's table rules (path, keys, class names) and the keys' own rule."""
    classes = getattr(data, "classes", [])
    check_entry(key, dataset, data.path, data.keys, any(isinstance(c, str) for c in classes))
    if data.keys is not None and (data.keys.x_test is None) != (data.keys.y_test is None):
        raise ConfigError(f"{key}.keys", "x_test and y_test are given together or not at all")


def _check_evaluation(key: str, name: str, spec: EvaluationSpec, size: tuple[int, int] | None) -> None:
    """A test set's name (it becomes array and metric names) and what the corruption functions would refuse,
    refused here, before any stage runs."""
    check_name(key, name)
    if name in RESERVED_SETS:
        raise ConfigError(key, f"{name!r} is taken ({name}_accuracy is already a metric); name the test set otherwise")
    seen: set[tuple[str, float]] = set()
    for index, corruption in enumerate(spec.corruptions):
        where = f"{key}.corruptions.{index}"
        if (corruption.kind, corruption.amount) in seen:
            raise ConfigError(where, f"{corruption.kind} {corruption.amount:g} is listed twice")
        seen.add((corruption.kind, corruption.amount))
        if corruption.kind == "blend" and corruption.amount == 1:
            raise ConfigError(f"{where}.amount", "blend 1 replaces each image by another test image; use < 1")
        if corruption.kind == "shuffle_patches" and size is not None and min(size) < PATCH_GRID:
            raise ConfigError(where, f"shuffle_patches cuts images into a {PATCH_GRID} x {PATCH_GRID} grid;"
                                     f" image_size {size[0]}x{size[1]} is smaller than that")


def _check_variant(params: Params, name: str, variant: VariantSpec) -> None:
    key = f"variants.{name}"
    if variant.target not in params.targets:
        raise ConfigError(f"{key}.target", f"{variant.target!r} is not in targets ({', '.join(params.targets)})")
    if variant.init_from not in params.init_names():
        raise ConfigError(
            f"{key}.init_from",
            f"{variant.init_from!r} is not configured (choose from: {', '.join(params.init_names())})",
        )
    depth = params.init_depth(variant.init_from)
    if depth is not None and variant.reuse_layers > depth:
        raise ConfigError(
            f"{key}.reuse_layers", f"{variant.reuse_layers} > {depth} hidden layers of {variant.init_from!r}"
        )
    if variant.train_bn and STRATEGIES[variant.strategy].cached:
        raise ConfigError(f"{key}.train_bn", "a cached strategy computes its fixed blocks once, in inference mode: their "
                          "normalization cannot train (use freeze)")
    if variant.frozen_layers > variant.reuse_layers:
        raise ConfigError(f"{key}.frozen_layers", f"{variant.frozen_layers} > reuse_layers {variant.reuse_layers}")
    if variant.reuse_layers == 0 and not variant.new_hidden and variant.strategy != "scratch":
        raise ConfigError(f"{key}.reuse_layers", "0 reused layers and no new_hidden leaves nothing to transfer")
    if variant.strategy not in STRATEGIES:
        raise ConfigError(f"{key}.strategy", f"{variant.strategy!r} is not a strategy (choose from: {', '.join(STRATEGIES)})")
    rule = STRATEGIES[variant.strategy]
    if rule.frozen == "some" and variant.frozen_layers == 0:
        raise ConfigError(f"{key}.frozen_layers", f"strategy {variant.strategy} needs at least 1 frozen layer")
    if rule.frozen == "none" and variant.frozen_layers:
        raise ConfigError(f"{key}.frozen_layers", f"strategy {variant.strategy} trains every layer; use freeze")
    if rule.keeps_output:
        _check_continue(params, key, variant, depth)
    for section in VARIANT_SECTIONS:
        if section in rule.takes and getattr(variant, section) is None:
            raise ConfigError(f"{key}.{section}", f"strategy {variant.strategy} needs it")
        if section not in rule.takes + rule.may_take and getattr(variant, section) is not None:
            takers = [name for name, other in STRATEGIES.items() if section in other.takes + other.may_take]
            raise ConfigError(f"{key}.{section}", f"only strategy {', '.join(takers)} takes this (strategy is {variant.strategy})")
    if variant.train_layers is not None:
        low, high = variant.train_layers
        if not low <= high <= variant.reuse_layers:
            raise ConfigError(f"{key}.train_layers", f"[{low}, {high}] is not a block of the {variant.reuse_layers} reused"
                              f" layers (1 <= low <= high <= reuse_layers)")
    if variant.unfreeze is not None:
        epochs = params.protocol(variant).stopping.max_epochs
        if variant.unfreeze.frozen_epochs >= epochs:
            raise ConfigError(
                f"{key}.unfreeze.frozen_epochs", f"{variant.unfreeze.frozen_epochs} >= stopping.max_epochs {epochs}"
            )
        if variant.unfreeze.unfreeze_top > variant.frozen_layers:
            raise ConfigError(
                f"{key}.unfreeze.unfreeze_top",
                f"{variant.unfreeze.unfreeze_top} > frozen_layers {variant.frozen_layers}",
            )
    if variant.grid is not None:
        _check_grid(f"{key}.grid", variant.grid)


def _check_continue(params: Params, key: str, variant: VariantSpec, depth: int | None) -> None:
    """`continue` trains the init model on as it is, output layer included: it must be whole and on its own task."""
    if variant.new_hidden:
        raise ConfigError(f"{key}.new_hidden", "strategy continue keeps the init model as it is: no new layers")
    if depth is not None and variant.reuse_layers != depth:
        raise ConfigError(f"{key}.reuse_layers", f"{variant.reuse_layers}: strategy continue reuses all {depth} hidden layers")
    if variant.init_from in params.sources:
        have, want = len(params.sources[variant.init_from].data.classes), len(target_classes(params, variant.target))
        if have != want:
            raise ConfigError(f"{key}.init_from", f"{variant.init_from} has {have} classes, target {variant.target} {want}:"
                                                  " continue keeps the output layer")


def _check_note(params: Params, note: OriginalNoteSpec) -> None:
    if note.source not in params.sources:
        raise ConfigError("original_note.source", f"{note.source!r} is not in sources ({', '.join(params.sources)})")
    for role, name in note.rows().items():
        if name not in params.variants:
            raise ConfigError(f"original_note.{role}", f"{name!r} is not in variants")
        if params.variants[name].init_from != note.source:
            raise ConfigError(f"original_note.{role}", f"{name} starts from {params.variants[name].init_from}, not {note.source}")


def _check_grid(key: str, grid: list[OptimizerSpec]) -> None:
    if not grid:
        raise ConfigError(key, "empty: nothing would be tried")
    if len({o.model_dump_json() for o in grid}) != len(grid):
        raise ConfigError(key, "a setting is listed twice")


def check_labels(key: str, labels_per_class: int, validation_fraction: float) -> None:
    """A labelled budget must leave at least one training and one validation image per class."""
    if labels_per_class < 2:
        raise ConfigError(key, f"{labels_per_class}: needs at least 2 labelled images per class (one is held out for validation)")


def _check_sweeps(params: Params) -> None:
    """Check the sweeps when params.yaml has a `sweeps:` section.

    Without one (older files, small test configs) the defaults may name variants the file does
    not have; that must not reject the whole file, so the sweep stage checks its own spec then.
    """
    if "sweeps" in params.model_fields_set:
        check_sweeps(params)


def check_sweeps(params: Params, only: str | None = None) -> None:
    """Names a sweep refers to must be configured; its grid must be non-empty and fit the model.

    `only`: check just that sweep (what its stage runs), not every configured one.
    """
    def check_target(key: str, target: str) -> None:
        if target not in params.targets:
            raise ConfigError(f"{key}.target", f"{target!r} is not in targets ({', '.join(params.targets)})")

    def check_distinct(key: str, values: list[Any]) -> None:
        if not values:
            raise ConfigError(key, "empty: the sweep would run nothing")
        if len(set(values)) != len(values):
            raise ConfigError(key, "a value is listed twice")

    for name, spec in params.sweeps.items():
        if spec is None or only not in (None, name):
            continue
        key = f"sweeps.{name}"
        check_name(key, name)
        check_target(key, spec.target)
        if isinstance(spec, TransferabilitySweep):
            known_depth = [*params.sources, *params.pretrain]  # the sweep re-creates upper layers at these sizes
            if spec.init_from not in known_depth:
                raise ConfigError(f"{key}.init_from", f"{spec.init_from!r}: choose a source or a pretrain entry ({', '.join(known_depth)})")
            if spec.init_from in params.sources and params.sources[spec.init_from].network.conv:
                raise ConfigError(f"{key}.init_from", f"{spec.init_from!r} is a CNN (network.conv): the sweep re-creates the "
                                  "blocks above k as new Dense layers, which cannot stand for its convolution blocks")
            depth = params.init_depth(spec.init_from)
            if spec.layers is not None:
                check_distinct(f"{key}.layers", spec.layers)
                for k in spec.layers:
                    if k > depth:
                        raise ConfigError(f"{key}.layers", f"{k} > {depth} hidden layers of {spec.init_from!r}")
            check_distinct(f"{key}.modes", spec.modes)
        else:
            check_distinct(f"{key}.labels_per_class", spec.labels_per_class)
            for n in spec.labels_per_class:
                check_labels(f"{key}.labels_per_class", n, params.transfer.validation_fraction)
            check_distinct(f"{key}.variants", spec.variants)
            for variant in spec.variants:
                if variant not in params.variants:
                    raise ConfigError(f"{key}.variants", f"{variant!r} is not in variants ({', '.join(params.variants)})")
