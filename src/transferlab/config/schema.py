"""The params schema's root (`Params`) and the sections of the race: variants, the shared protocol,
sweeps, the original note's rows, MLflow; and the queries stages ask of a parsed `Params`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from transferlab.config.base import (
    BUILTIN_INIT,
    Fraction,
    NetworkSpec,
    NonNegativeInt,
    OptimizerSpec,
    PositiveInt,
    Seed,
    StoppingSpec,
    Strict,
)
from transferlab.config.inputs import (
    ImageData,
    ModelFile,
    PretrainSpec,
    SourceSpec,
    TargetSpec,
    ZooEntry,
)
from transferlab.errors import ConfigError


class UnfreezeSpec(Strict):
    frozen_epochs: PositiveInt  # epochs trained with `frozen_layers` fixed, before unfreezing
    unfreeze_top: PositiveInt  # how many of the frozen layers (from the top) are then trained
    rate_factor: Annotated[float, Field(gt=0, le=1)] = 0.5  # after unfreezing: the tuned learning rate times this


VARIANT_SECTIONS = ("unfreeze", "train_layers", "layer_decay")  # optional variant keys that only some strategies take


class VariantSpec(Strict):
    strategy: str  # a key of strategies.STRATEGIES
    init_from: str  # a `sources:` entry, a `pretrain:` entry, or a `zoo:` / `model_files:` entry
    target: str  # a `targets:` entry
    reuse_layers: NonNegativeInt  # the lowest k blocks of the init model (a Dense stack's: its hidden layers)
    frozen_layers: NonNegativeInt = 0  # the lowest f <= k of them stay fixed
    new_hidden: list[PositiveInt] = []  # new hidden layers above the reused ones
    unfreeze: UnfreezeSpec | None = None
    train_layers: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None  # surgical: the block [low, high] of reused layers trained
    layer_decay: Annotated[float, Field(gt=0, le=1)] | None = None  # per-layer rates: each layer's rate over the one above's
    train_bn: bool = False  # fastai's train_bn: the fixed blocks' BatchNormalization trains (and updates its statistics)
    # Overrides of the shared protocol. A variant that changes its grid or its stopping rule has
    # another tuning budget than the rest, and the report refuses to rank it with them.
    grid: list[OptimizerSpec] | None = None
    stopping: StoppingSpec | None = None
    batch_size: PositiveInt | None = None  # e.g. the original note's 200


class Protocol(Strict):
    """The race every variant of a comparison runs: how labels are split, how long it trains, what is tuned."""

    batch_size: PositiveInt
    validation_fraction: Fraction
    stopping: StoppingSpec
    grid: list[OptimizerSpec]

    def budget(self) -> dict[str, Any]:
        """What must be equal for two variants to be ranked against each other."""
        return {"grid": [o.label + (f" clip {o.clip_value:g}" if o.clip_value else "") for o in self.grid],
                "max_epochs": self.stopping.max_epochs, "patience": self.stopping.patience,
                "min_delta": self.stopping.min_delta, "monitor": self.stopping.monitor,
                "validation_fraction": self.validation_fraction, "batch_size": self.batch_size}


def split_sizes(labels_per_class: int, validation_fraction: float) -> tuple[int, int]:
    """(training, validation) images per class carved out of `labels_per_class`: at least one of each."""
    validation = max(1, round(labels_per_class * validation_fraction))
    return labels_per_class - validation, validation


class TransferSpec(Strict):
    """The fair race shared by every variant and sweep (a variant may override `grid` or `stopping`)."""

    batch_size: PositiveInt = 32
    seed: Seed = 7  # repetition i initialises new layers and orders batches with seed + i
    seeds: PositiveInt = 1  # independent repetitions per variant, paired across variants
    resample_labels: bool = True  # draw a new labelled subset for each repetition
    validation_fraction: Fraction = 0.2  # of each repetition's labelled images, per class, held out for validation
    stopping: StoppingSpec = StoppingSpec()
    grid: Annotated[list[OptimizerSpec], Field(min_length=1)] = [OptimizerSpec()]  # tried per variant and repetition


class TransferabilitySweep(Strict):
    """Yosinski et al. 2014: reuse the lowest k layers, frozen or fine-tuned, the rest re-created at the source's sizes.

    `selffer-*` modes (BnB, BnB+) take the lowest k layers from a network trained on the target's
    own labelled training images of each repetition instead of from `init_from` (whose
    architecture they keep): the control that separates broken co-adaptation from specificity.
    `surgical` (Lee et al. 2023) reuses every layer and, at k > 0, trains only hidden k (and the new output).
    """

    kind: Literal["transferability"]
    target: str = "mnist"
    init_from: str = BUILTIN_INIT
    layers: list[NonNegativeInt] | None = None  # the k values; None: 0 … depth of `init_from`
    modes: list[Literal["frozen", "fine-tuned", "selffer-frozen", "selffer-fine-tuned", "surgical"]] = ["frozen", "fine-tuned"]


class LabelBudgetSweep(Strict):
    """Target accuracy against labels per class, for some configured variants (evaluated on `target`)."""

    kind: Literal["label_budget"]
    target: str = "mnist"
    labels_per_class: list[PositiveInt] = [5, 10, 30, 100, 300]
    variants: list[str] = ["scratch", "reuse5", "freeze2"]


SWEEP_KINDS = ("transferability", "label_budget")
# A sweep is a named entry with its `kind`, as a variant has its strategy: a stage `sweep_<name>` each (dvc.yaml).
Sweep = Annotated[TransferabilitySweep | LabelBudgetSweep, Field(discriminator="kind")]
DEFAULT_SWEEPS: dict[str, Sweep | None] = {"transferability": TransferabilitySweep(kind="transferability"),
                                            "label_budget": LabelBudgetSweep(kind="label_budget")}


class OriginalNoteSpec(Strict):
    """Which source and variants are the original note's rows (report section "The original experiment")."""

    source: str  # the note's DNN5 "from scratch": a `sources:` entry
    reuse: str  # hidden1-3 reused + a new 30-unit hidden4, all trained
    cached: str  # the same with hidden1-2 frozen and cached
    frozen: str | None = None  # the same frozen, not cached (the note has no such row)
    control: str | None = None  # the source trained on for as many epochs (the note has no such row)

    def rows(self) -> dict[str, str]:
        """Variant role -> variant name, in table order."""
        roles = {"reuse": self.reuse, "frozen": self.frozen, "cached": self.cached, "control": self.control}
        return {role: name for role, name in roles.items() if name is not None}


class MlflowSpec(Strict):
    experiment: Annotated[str, Field(min_length=1, max_length=500, pattern=r"^\S(.*\S)?$")] = "transferlab"
    register_models: bool = True  # source and pretraining models become registry versions (the zoo)
    # registered name: prefix + stage entry (`transferlab-source`); it also appears in `models:/<name>/…` URIs
    model_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]*$")] = "transferlab-"


class Params(Strict):
    sources: Annotated[dict[str, SourceSpec], Field(min_length=1)]
    targets: Annotated[dict[str, TargetSpec], Field(min_length=1)]
    transfer: TransferSpec
    variants: Annotated[dict[str, VariantSpec], Field(min_length=1)]
    pretrain: dict[str, PretrainSpec] = {}
    zoo: dict[str, ZooEntry] = {}
    model_files: dict[str, ModelFile] = {}
    mlflow: MlflowSpec = MlflowSpec()
    sweeps: dict[str, Sweep | None] = Field(default_factory=lambda: dict(DEFAULT_SWEEPS))  # None: switched off
    original_note: OriginalNoteSpec | None = None

    def init_depth(self, init_from: str) -> int | None:
        """Number of hidden layers of the model named by `init_from` (None: known only once it is loaded)."""
        if init_from in self.sources:
            return self.sources[init_from].network.depth
        spec = self.pretrain.get(init_from) or self.zoo.get(init_from)
        return len(spec.hidden_units) if spec is not None and hasattr(spec, "hidden_units") else None

    def init_names(self) -> list[str]:
        """Every model a variant may start from: sources, pretraining entries, zoo entries, model files."""
        return [*self.sources, *self.pretrain, *self.zoo, *self.model_files]

    def network_for(self, init_from: str) -> NetworkSpec:
        """How layers grafted onto the model `init_from` are made (activation, initializer): as that model's own.

        A source's network; a pretraining or zoo entry's declared activation (and initializer);
        the defaults for model files. Every one of these is in the init model's file, which the
        variant's stage depends on, so no extra param section is read.
        """
        if init_from in self.sources:
            return self.sources[init_from].network
        spec = self.pretrain.get(init_from) or self.zoo.get(init_from) or self.model_files.get(init_from)
        declared = {key: getattr(spec, key) for key in ("activation", "initializer") if hasattr(spec, key)}
        if declared.get("activation") not in NetworkSpec.model_fields["activation"].annotation.__args__:
            declared.pop("activation", None)  # a model file's `linear` hidden layers: new layers stay relu
        return NetworkSpec(**declared)

    def protocol(self, variant: VariantSpec | None = None) -> Protocol:
        """The shared race (`transfer`), with a variant's own overrides applied."""
        spec = self.transfer
        return Protocol(
            batch_size=(variant.batch_size if variant is not None and variant.batch_size else spec.batch_size),
            validation_fraction=spec.validation_fraction,
            stopping=(variant.stopping if variant is not None and variant.stopping else spec.stopping),
            grid=(variant.grid if variant is not None and variant.grid else spec.grid),
        )


def default_source(params: Params, key: str) -> SourceSpec:
    """The source named `source`, which pretraining pools and zoo entries are built from."""
    if BUILTIN_INIT not in params.sources:
        raise ConfigError(key, f"needs the default source sources.{BUILTIN_INIT} (have: {', '.join(params.sources)})")
    return params.sources[BUILTIN_INIT]


def target_classes(params: Params, name: str) -> list[int] | list[str]:
    """A target's classes: its own, or with `split: source` its source's (written or not)."""
    target = params.targets[name]
    return params.sources[target.source].data.classes if target.split == "source" else target.classes


def target_dataset(params: Params, name: str) -> tuple[str, ImageData]:
    """(dataset, the section naming its file) a target's images come from: its own, or its source's for `dataset: source`."""
    target = params.targets[name]
    if target.dataset == "source":
        data = params.sources[target.source].data
        return data.dataset, data
    return target.dataset, target
