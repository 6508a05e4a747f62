"""Stage `prepare_source`: load the source dataset, keep the source classes, split train/test.

    python -m stages.prepare_source        # writes data/prepared/source.npz

Reads `source_data` from params.yaml. No TensorFlow import: this stage only moves arrays.
"""
from __future__ import annotations

from transferlab import data, paths
from transferlab.cli import run_main
from transferlab.config import load_params


def main(argv: list[str]) -> None:
    spec = load_params(paths.PARAMS).source_data
    images = data.select_classes(data.load_images(spec.dataset, spec.path), spec.classes, f"source_data ({spec.dataset})")
    split = data.split_source(images, spec.test_fraction, spec.seed)
    data.save_npz(paths.source_data(), **split)
    print(f"source: {len(split['y_train'])} train / {len(split['y_test'])} test images of classes {spec.classes}")


if __name__ == "__main__":
    run_main(main)
