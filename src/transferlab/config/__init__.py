"""The params.yaml schema: parsed once into frozen, typed objects that reject unknown keys.

Errors name the key path (`variants.freeze2.frozen_layers: 4 > reuse_layers 3`) so a user
knows which line to fix. Pure pydantic + ruamel.yaml: importing this costs no TensorFlow start-up.

params.yaml is read exactly as DVC reads it (ruamel.yaml, YAML 1.2), so the value a stage uses is
the value `dvc.lock` records: PyYAML (YAML 1.1) would read `seed: 010` as 8 and `1:30` as 90.
Types are strict: `epochs: true` is not 1, `learning_rate: .inf` is not a rate.

This package's face: the rest of the code imports these names from `transferlab.config`. Where they live:
`base` (strict models, constrained numbers, optimizer / stopping / network / training specs),
`inputs` (sources' and targets' data, a target's further test sets, pretraining, zoo, model files), `schema` (`Params`,
variants, the protocol, sweeps, and queries of a parsed `Params`), `checks` (the cross-field rules),
`loading` (reading YAML, parsing, error lines, a stage's entry), `strategies` (the strategy table),
`datasets` (the dataset kinds' table; `data.datasets` maps each kind to its loader).
"""
from __future__ import annotations

from transferlab.config import strategies
from transferlab.config.base import (
    BUILTIN_INIT,
    MAX_IMAGE_SIZE,
    Fraction,
    ImageSide,
    NetworkSpec,
    NonNegativeInt,
    OptimizerSpec,
    PositiveFloat,
    PositiveInt,
    Seed,
    StoppingSpec,
    Strict,
    TrainSpec,
)
from transferlab.config.checks import (
    ENTRY_SECTIONS,
    IDENTIFIER,
    MAX_NAME_LENGTH,
    _check_variant,
    check_consistency,
    check_labels,
    check_name,
    check_sweeps,
)
from transferlab.config.inputs import (
    MAIN_SET,
    PATCH_GRID,
    PRETRAIN_METHODS,
    RESERVED_SETS,
    ZOO_KINDS,
    AutoencoderSpec,
    Channels,
    Classes,
    Corruption,
    CorruptionSpec,
    Dataset,
    EvaluationSpec,
    GoodBadSpec,
    ImageData,
    ImageSize,
    ModelFile,
    NpzKeys,
    PretrainBase,
    PretrainSpec,
    RankingSpec,
    RbmSpec,
    RegistryEntry,
    SklearnMlpEntry,
    SourceDataSpec,
    SourceSpec,
    TargetSpec,
    ZooEntry,
)
from transferlab.config.loading import (
    MAX_YAML_VALUES,
    load_params,
    parse_params,
    read_yaml,
    stage_entry,
)
from transferlab.config.schema import (
    SWEEP_KINDS,
    VARIANT_SECTIONS,
    LabelBudgetSweep,
    MlflowSpec,
    OriginalNoteSpec,
    Params,
    Protocol,
    Sweep,
    TransferabilitySweep,
    TransferSpec,
    UnfreezeSpec,
    VariantSpec,
    default_source,
    split_sizes,
    target_classes,
    target_dataset,
)

__all__ = [
    "strategies",
    # base
    "BUILTIN_INIT", "MAX_IMAGE_SIZE", "Fraction", "ImageSide", "NetworkSpec", "NonNegativeInt", "OptimizerSpec",
    "PositiveFloat", "PositiveInt", "Seed", "StoppingSpec", "Strict", "TrainSpec",
    # inputs
    "MAIN_SET", "PATCH_GRID", "PRETRAIN_METHODS", "RESERVED_SETS", "ZOO_KINDS", "AutoencoderSpec", "Channels", "Classes",
    "Corruption", "CorruptionSpec", "Dataset", "EvaluationSpec", "GoodBadSpec", "ImageData", "ImageSize", "ModelFile", "NpzKeys", "PretrainBase",
    "PretrainSpec", "RankingSpec", "RbmSpec", "RegistryEntry", "SklearnMlpEntry", "SourceDataSpec",
    "SourceSpec", "TargetSpec", "ZooEntry",
    # schema
    "VARIANT_SECTIONS", "LabelBudgetSweep", "MlflowSpec", "OriginalNoteSpec", "Params", "Protocol", "SWEEP_KINDS", "Sweep",
    "TransferabilitySweep", "TransferSpec", "UnfreezeSpec", "VariantSpec", "default_source", "split_sizes",
    "target_classes", "target_dataset",
    # checks
    "ENTRY_SECTIONS", "IDENTIFIER", "MAX_NAME_LENGTH", "_check_variant", "check_consistency", "check_labels",
    "check_name", "check_sweeps",
    # loading
    "MAX_YAML_VALUES", "load_params", "parse_params", "read_yaml", "stage_entry",
]
