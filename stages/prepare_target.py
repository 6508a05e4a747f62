"""Stage `prepare_target@<name>`: one target task — its classes, a fixed test set, a labelled pool.

    python -m stages.prepare_target mnist   # writes data/prepared/target_mnist.npz

Reads `targets.<name>` (and `source_data` when the target uses the source's images). Images of
another size are resized to `image_size` here, the declared preprocessing step that lets a
model trained on 28x28 inputs be reused on, say, 8x8 digits. No TensorFlow import.
"""
from __future__ import annotations

from transferlab import data, paths
from transferlab.cli import run_main
from transferlab.config import load_params, stage_entry
from transferlab.errors import ConfigError

MAX_RESIZE_BYTES = 4 * 2**30


def main(argv: list[str]) -> None:
    params = load_params(paths.PARAMS)
    _, name = stage_entry(argv, params, "targets", usage="python -m stages.prepare_target <target name>")
    spec = params.targets[name]
    dataset, path = (params.source_data.dataset, params.source_data.path) if spec.dataset == "source" else (spec.dataset, spec.path)
    images = data.select_classes(data.load_images(dataset, path), spec.classes, f"targets.{name} ({dataset})")
    if spec.image_size is not None and images.side != spec.image_size:
        needed = len(images.x) * spec.image_size**2 * 8  # the resize works in float64
        if needed > MAX_RESIZE_BYTES:
            raise ConfigError(
                f"targets.{name}.image_size",
                f"{spec.image_size}: resizing {len(images.x)} images needs {needed / 2**30:.1f} GiB (limit {MAX_RESIZE_BYTES / 2**30:.0f} GiB)",
            )
        images = data.Images(data.resize(images.x, spec.image_size), images.y)
    split = data.split_target(images, spec.test_per_class, spec.labels_per_class, spec.seed, f"targets.{name}.labels_per_class")
    data.save_npz(paths.target_data(name), **split)
    print(
        f"target {name}: pool {len(split['y_pool'])}, test {len(split['y_test'])} images, "
        f"{images.side}x{images.side}, classes {spec.classes} -> 0..{len(spec.classes) - 1}"
    )


if __name__ == "__main__":
    run_main(main)
