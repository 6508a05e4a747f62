"""Where reused layers come from, loaded safely: model files are untrusted input."""
from __future__ import annotations

import zipfile
from pathlib import Path

import keras

from transferlab import networks
from transferlab.errors import ModelError


def load_keras(path: Path) -> keras.Model:
    """Load a `.keras` file with `safe_mode=True`; refuse Lambda layers and models without `hidden1`."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a .keras model archive (only the .keras format is loaded)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for corrupt or unsafe archives
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "lambda" in reason.lower():
            raise ModelError(f"{path}: refused, it contains a Lambda layer (arbitrary code)") from None
        raise ModelError(f"{path}: cannot be loaded safely ({reason[:200]})") from None
    if any(isinstance(layer, keras.layers.Lambda) for layer in model.layers):
        raise ModelError(f"{path}: refused, it contains a Lambda layer (arbitrary code)")
    if not networks.hidden_layers(model):
        raise ModelError(f"{path}: has no layer named hidden1 to reuse")
    return model
