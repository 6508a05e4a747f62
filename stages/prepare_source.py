"""Stage `prepare_source@<name>`: one source task — its classes, its training and test sets.

    python -m stages.prepare_source source  # writes data/prepared/sources/source.npz

Reads `sources.<name>.data`: the dataset's official test part where it has one (mnist_npz,
mnist_idx, keras; `split: seeded` re-splits), else a seeded stratified split. No TensorFlow import.
"""
from __future__ import annotations

from transferlab import paths
from transferlab.config import load_params, stage_entry
from transferlab.data import datafiles, tasks
from transferlab.launch.cli import run_main


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    _, name = stage_entry(argv, params, "sources", usage="python -m stages.prepare_source <source name>")
    spec = params.sources[name]
    split = tasks.source_arrays(name, spec)
    datafiles.save_npz(paths.source_data(name), **split)
    how = "official" if spec.data.official else f"seeded, test_fraction {spec.data.test_fraction:g}"
    height, width, channels = split["x_test"].shape[1:]
    print(f"source {name}: {len(split['y_train'])} train / {len(split['y_test'])} test images, {height}x{width}x{channels}"
          f" ({how} split) of classes {spec.data.classes}")


if __name__ == "__main__":
    run_main(main)
