"""Stage `prepare_target@<name>`: one target task — its classes, a fixed test set, a labelled pool.

    python -m stages.prepare_target mnist   # writes data/prepared/target_mnist.npz

Reads `targets.<name>` and its source's `data` (`dataset: source` uses the source's images;
`split: source` is the source's own task: its training set the pool, its test set the test set).
Images of another size are resized to `image_size` here, and adapted to `channels` (grey -> RGB by
repeating, RGB -> grey by ITU-R BT.601 luminance): the declared preprocessing steps that let a model
trained on 28x28 grey inputs be reused on, say, 8x8 digits or colour images. What was done is noted in
the file (`data.PREPARATION`), recorded in `runs/targets/<name>.json` for the report, and printed. For each entry
`<set>` of `targets.<name>.evaluations` the file also holds `x_test_<set>` / `y_test_<set>`: a corrupted copy of
each test image (never of a pool image), a further test set every variant is scored on beside the test set.
No TensorFlow import.
"""
from __future__ import annotations

import json

from transferlab import artifacts, data, paths
from transferlab.config import load_params, stage_entry, target_classes
from transferlab.data import datafiles, tasks
from transferlab.launch.cli import run_main


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    _, name = stage_entry(argv, params, "targets", usage="python -m stages.prepare_target <target name>")
    split = tasks.target_arrays(params, name)
    datafiles.save_npz(paths.target_data(name), **split)
    height, width, channels = split["x_test"].shape[1:]
    notes = json.loads(str(split[data.PREPARATION]))
    classes = target_classes(params, name)
    artifacts.write_json(paths.target_run(name), {  # the report states how the images were prepared
        "classes": classes, "image_shape": [height, width, channels], "pool": len(split["y_pool"]), "test": len(split["y_test"]),
        "preparation": notes})
    further = "".join(f", {test_set} test {len(split[data.test_set_keys(test_set)[1]])}" for test_set in data.test_sets(split))
    print(f"target {name}: pool {len(split['y_pool'])}, test {len(split['y_test'])}{further} images, {height}x{width}x{channels},"
          f" classes {classes} -> 0..{len(classes) - 1}" + "".join(f"; {note}" for note in notes.values()))


if __name__ == "__main__":
    run_main(main)
