"""The building blocks every params section shares: strict models, constrained numbers, and the
optimizer, stopping, network and training specs.

Types are strict: `epochs: true` is not 1, `learning_rate: .inf` is not a rate.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Strict: a YAML boolean is never a number, a float never an int; floats must be finite.
PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0, strict=True, allow_inf_nan=False)]
Fraction = Annotated[float, Field(gt=0, lt=1, strict=True, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, lt=2**31, strict=True)]
MAX_IMAGE_SIZE = 1024  # a side length; 100000 would ask for terabytes when resizing
ImageSide = Annotated[int, Field(gt=0, le=MAX_IMAGE_SIZE, strict=True)]

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
    # conv: a CNN's convolution blocks, lowest first (filters of each 3x3 stride-2 Conv2D + BatchNormalization +
    # activation), then global average pooling; [] is a Dense stack on the flattened image. Each conv block and
    # each Dense layer is a block: what reuse_layers, frozen_layers and train_layers count.
    conv: list[PositiveInt] = []
    hidden_units: Annotated[list[PositiveInt], Field(min_length=1)] = [300, 50, 50, 50, 50]
    activation: Literal["relu", "elu", "selu", "tanh", "sigmoid", "leaky_relu"] = "relu"
    initializer: Literal["he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal"] = "he_normal"

    @property
    def depth(self) -> int:
        """Blocks below the output layer: conv blocks, then Dense layers."""
        return len(self.conv) + len(self.hidden_units)


class TrainSpec(Strict):
    """One network's training (the source model, pretraining): `epochs` is the cap; with `patience`,
    early stopping on a held-out part of the training data keeps the best epoch's weights."""

    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: OptimizerSpec = OptimizerSpec()
    seed: Seed = 42
    patience: PositiveInt | None = None  # null: exactly `epochs`, the last epoch kept (a fixed protocol)
    validation_fraction: Fraction = 0.1  # with patience: the share of the training data held out to stop on
