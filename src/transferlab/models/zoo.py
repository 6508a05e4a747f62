"""Where reused layers come from, loaded safely: model files are untrusted input.

Sources: a `.keras` file (`load_keras`), a fitted scikit-learn `MLPClassifier`
(`from_sklearn_mlp`), an `.npz` of weights from any framework (`from_npz`), and the MLflow
Model Registry (`transferlab.tracking.registry`). A `.keras` file may hold any network of built-in
Keras layers (a CNN, residual blocks, BatchNormalization, …): one input, one output, each layer
applied once; a custom class, a subclass of a built-in layer or a `Lambda` is refused with one line
(`networks.check_supported`). Its *blocks* (`models/blocks.py`: found, or declared by a
`model_files` entry's `blocks`) are what `reuse_layers` counts (`init_blocks`). A scikit-learn MLP
and an `.npz` become a Dense stack, `hidden1 … hiddenN` and (when present) `outputs`, each layer a
block. HDF5 files (`.h5`) are not loaded: convert them to `.keras` first (docs/strategies.md,
"Bring your own network").

The `.npz` format holds `<layer>/kernel` (inputs × units) and `<layer>/bias` (units) arrays,
nothing pickled. Exporting a PyTorch `nn.Sequential` of `nn.Linear` layers (PyTorch stores
weights as (out, in), hence the transpose):

    sd = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    arrays = {f"{k.rsplit('.', 1)[0]}/{'kernel' if k.endswith('weight') else 'bias'}": v.T if k.endswith("weight") else v for k, v in sd.items()}
    np.savez("weights.npz", **arrays)

then load with `from_npz("weights.npz", name_map={"0": "hidden1", "2": "hidden2", "4": "outputs"})`.
A JAX/Flax `Dense` already stores (in, out) kernels: write `params[name]["kernel"]` and
`params[name]["bias"]` under the same keys.

`python -m transferlab.tracking.registry list` (or `transferlab-zoo list`) prints the registry's catalogue.
"""
from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from transferlab.config import ModelFile
from transferlab.data.datafiles import save_npz
from transferlab.errors import ConfigError, ModelError, first_line
from transferlab.models import blocks, networks

if TYPE_CHECKING:
    from sklearn.neural_network import MLPClassifier

# scikit-learn's activation names -> Keras'
SKLEARN_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "linear"}
_HIDDEN = re.compile(r"hidden([1-9][0-9]*)")
_CUSTOM_CLASS = re.compile(r"Could not locate class '([^']+)'")
HDF5 = (".h5", ".hdf5")  # Keras 2's format: converted to .keras outside the pipeline, never loaded here


def load_keras(path: Path, origin: str | None = None) -> keras.Model:
    """Load a `.keras` file with `safe_mode=True`; refuse what is unsafe or what the engine cannot run (`networks.check_supported`).

    `origin` names the model in error lines (default: `path`), e.g. the registry URI of a fetched file.
    """
    path = Path(path)
    origin = origin or str(path)
    if not path.is_file():
        raise ModelError(f"{origin}: model file not found")
    if path.suffix.lower() in HDF5:
        raise ModelError(f"{origin}: an HDF5 model is not loaded, only the .keras format; convert it to .keras first "
                         "(docs/strategies.md, Bring your own network)")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelError(f"{origin}: not a .keras model archive (only the .keras format is loaded)")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for corrupt or unsafe archives
        text = " ".join(str(error).split())
        if "lambda" in text.lower():
            raise ModelError(f"{origin}: refused, it contains a Lambda layer (arbitrary code)") from None
        # a custom class is named deep in Keras' message (its first line names only the model's class)
        if custom := _CUSTOM_CLASS.search(text):
            raise ModelError(f"{origin}: refused, layer class {custom[1]!r} is not a built-in Keras layer "
                             f"(custom code is never loaded); {networks.SUPPORTED}") from None
        raise ModelError(f"{origin}: cannot be loaded safely ({first_line(error)[:200]})") from None
    networks.check_supported(model, origin)
    return model


def init_blocks(model: keras.Model, model_files: Mapping[str, ModelFile], name: str) -> tuple[list[str] | None, list[blocks.Block]]:
    """(the declared block patterns or None, the blocks) of init model `name`: `model_files.<name>.blocks` declares them.

    A pattern that does not fit the model, or patterns declared for a Dense stack (each of whose
    layers is a block already), is refused in one line naming `model_files.<name>.blocks`.
    """
    entry = model_files.get(name)
    patterns = None if entry is None or entry.blocks is None else list(entry.blocks)
    key = f"model_files.{name}.blocks"
    if patterns is not None and networks.is_dense_chain(model):
        raise ConfigError(key, f"{entry.path} is a Dense stack (hidden1 …), each layer a block already: remove blocks")
    try:
        return patterns, blocks.blocks(model, patterns)
    except ModelError as error:
        if patterns is None:
            raise
        raise ConfigError(key, f"{entry.path}: {str(error).removeprefix(f'model {model.name}: ')}") from None


def block_text(block: blocks.Block) -> str:
    """`conv2d_1..activation_1:104`: a block's first and last layer and its parameter count (a registry tag's part)."""
    span = block.layers[0] if len(block.layers) == 1 else f"{block.layers[0]}..{block.layers[-1]}"
    return f"{span}:{block.parameters}"


Weights = list[tuple[str, np.ndarray, np.ndarray]]  # (layer name, kernel, bias), lowest layer first


def _stack(weights: Weights, activation: str, output_activation: str, origin: str) -> keras.Model:
    """Check that kernels chain and biases fit, then build the Dense stack and set its weights."""
    for name, kernel, bias in weights:
        if kernel.ndim != 2:
            raise ModelError(f"{origin}: {name} kernel has shape {kernel.shape}, expected 2-D (inputs, units)")
        if bias.shape != (kernel.shape[1],):
            raise ModelError(f"{origin}: {name} bias shape {bias.shape} vs expected ({kernel.shape[1]},) kernel columns")
        if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
            raise ModelError(f"{origin}: {name} has non-finite weights")
    for (below, low, _), (name, kernel, _) in zip(weights, weights[1:]):
        if kernel.shape[0] != low.shape[1]:
            expected = (low.shape[1], kernel.shape[1])
            raise ModelError(f"{origin}: {name} kernel {kernel.shape} vs expected {expected} (after {below} {low.shape})")
    specs = [
        networks.LayerSpec(name, int(kernel.shape[1]), output_activation if name == networks.OUTPUT else activation)
        for name, kernel, _ in weights
    ]
    # the initializer and seed are irrelevant: every weight is overwritten below
    model = networks.build(int(weights[0][1].shape[0]), specs, "glorot_uniform", seed=0)
    for name, kernel, bias in weights:
        model.get_layer(name).set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    networks.check_supported(model, origin)  # e.g. an output activation the engine's loss does not assume
    return model


def from_sklearn_mlp(mlp: MLPClassifier) -> keras.Model:
    """A fitted `MLPClassifier` as a Keras stack whose `outputs` match `mlp.predict_proba`.

    A binary classifier (one logistic output unit) becomes a 2-unit softmax with a zero first
    column: softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], exactly sklearn's two columns.
    """
    origin = f"MLPClassifier{tuple(getattr(mlp, 'hidden_layer_sizes', ()))}"
    if not hasattr(mlp, "coefs_"):
        raise ModelError(f"{origin}: not fitted (no coefs_)")
    if mlp.activation not in SKLEARN_ACTIVATIONS:
        raise ModelError(f"{origin}: activation {mlp.activation!r} has no Keras equivalent")
    kernels = [np.asarray(c, dtype=np.float64) for c in mlp.coefs_]
    biases = [np.asarray(b, dtype=np.float64) for b in mlp.intercepts_]
    if mlp.out_activation_ == "logistic" and kernels[-1].shape[1] == 1:
        kernels[-1] = np.hstack([np.zeros_like(kernels[-1]), kernels[-1]])
        biases[-1] = np.concatenate([[0.0], biases[-1]])
    elif mlp.out_activation_ != "softmax":
        raise ModelError(f"{origin}: output activation {mlp.out_activation_!r} (multi-label) is not supported")
    names = [networks.hidden_name(i + 1) for i in range(len(kernels) - 1)] + [networks.OUTPUT]
    return _stack(list(zip(names, kernels, biases)), SKLEARN_ACTIVATIONS[mlp.activation], "softmax", origin)


def save_weights_npz(model: keras.Model, path: Path) -> None:
    """Write every Dense layer's `<layer>/kernel` and `<layer>/bias` to an `.npz` (atomically, no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if not isinstance(layer, keras.layers.Dense) or not layer.use_bias:
            raise ModelError(f"{path}: layer {layer.name} is not a Dense layer with a bias; only those are exported")
        kernel, bias = layer.get_weights()
        arrays[f"{layer.name}/kernel"], arrays[f"{layer.name}/bias"] = kernel, bias
    save_npz(Path(path), **arrays)


def _read_weight_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an `.npz`, read without unpickling anything."""
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    if not zipfile.is_zipfile(path):  # a truncated zip loses its central directory, at the end
        raise ModelError(f"{path}: not a readable .npz archive (truncated or another format)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as error:  # object arrays need pickle, which would run code from the file
        raise ModelError(f"{path}: refused to load ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise ModelError(f"{path}: not a readable .npz archive ({str(error)[:200]})") from None


def _layer_arrays(arrays: dict[str, np.ndarray], path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Group `<layer>/kernel` and `<layer>/bias` keys by layer; each layer needs both, numeric."""
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        layer, _, kind = key.rpartition("/")
        if not layer or kind not in ("kernel", "bias"):
            raise ModelError(f"{path}: array {key!r} is not named <layer>/kernel or <layer>/bias")
        # np.number includes complex: casting to float32 would silently drop the imaginary part
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ModelError(f"{path}: {key} has dtype {array.dtype}, expected real numbers")
        layers.setdefault(layer, {})[kind] = array
    for layer, parts in layers.items():
        for kind in ("kernel", "bias"):
            if kind not in parts:
                raise ModelError(f"{path}: {layer} has no {layer}/{kind} array")
    return layers


def from_npz(
    path: Path,
    name_map: Mapping[str, str] | None = None,
    activation: str = "relu",
    output_activation: str = "softmax",
) -> keras.Model:
    """A Keras stack from an `.npz` of `<layer>/kernel` and `<layer>/bias` arrays.

    Args:
        name_map: `{their_name: our_name}` renames the file's layers to `hidden1 … hiddenN`
            and (optionally: transfer always replaces it) `outputs`; other names are refused.
        activation: of every hidden layer; `output_activation` of `outputs`.
    """
    path = Path(path)
    for act in (activation, output_activation):
        try:
            keras.activations.get(act)
        except ValueError:
            raise ModelError(f"{path}: unknown activation {act!r}") from None
    layers = _layer_arrays(_read_weight_arrays(path), path)
    name_map = dict(name_map or {})
    missing = [theirs for theirs in name_map if theirs not in layers]
    if missing:
        raise ModelError(f"{path}: name_map names layer(s) {', '.join(missing)} not in the file (has: {', '.join(layers)})")
    renamed = {name_map.get(name, name): parts for name, parts in layers.items()}
    if len(renamed) != len(layers):
        raise ModelError(f"{path}: name_map maps two layers to the same name")
    indices = sorted(int(m.group(1)) for name in renamed if (m := _HIDDEN.fullmatch(name)))
    unexpected = [name for name in renamed if name != networks.OUTPUT and not _HIDDEN.fullmatch(name)]
    if unexpected:
        raise ModelError(f"{path}: layer(s) {', '.join(unexpected)} are not hidden1..hiddenN or outputs (use name_map)")
    if not indices or indices != list(range(1, len(indices) + 1)):
        gap = next(i for i in range(1, len(indices) + 2) if i not in indices)
        raise ModelError(f"{path}: no layer hidden{gap} (has {', '.join(f'hidden{i}' for i in indices)})")
    order = [networks.hidden_name(i) for i in indices] + ([networks.OUTPUT] if networks.OUTPUT in renamed else [])
    weights = [(name, renamed[name]["kernel"], renamed[name]["bias"]) for name in order]
    return _stack(weights, activation, output_activation, str(path))
