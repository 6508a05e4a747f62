"""Stage `prepare_target@<name>`: one target task — its classes, a fixed test set, a labelled pool.

    python -m stages.prepare_target mnist   # writes data/prepared/target_mnist.npz

Reads `targets.<name>` and its source's `data` (`dataset: source` uses the source's images;
`split: source` is the source's own task: its training set the pool, its test set the test set).
Images of another size are resized to `image_size` here, the declared preprocessing step that
lets a model trained on 28x28 inputs be reused on, say, 8x8 digits. With `targets.<name>.shift`
the file also holds `x_test_shift` / `y_test_shift`: a corrupted copy of each test image (never of a
pool image), the shifted test set every variant is scored on beside the test set. No TensorFlow import.
"""
from __future__ import annotations

from transferlab import data, paths, tasks
from transferlab.cli import run_main
from transferlab.config import load_params, stage_entry, target_classes


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    _, name = stage_entry(argv, params, "targets", usage="python -m stages.prepare_target <target name>")
    split = tasks.target_arrays(params, name)
    data.save_npz(paths.target_data(name), **split)
    side = data.Images(split["x_test"], split["y_test"]).side
    classes = target_classes(params, name)
    shifted = f", shifted test {len(split['y_test_shift'])}" if "y_test_shift" in split else ""
    print(f"target {name}: pool {len(split['y_pool'])}, test {len(split['y_test'])}{shifted} images, {side}x{side},"
          f" classes {classes} -> 0..{len(classes) - 1}")


if __name__ == "__main__":
    run_main(main)
