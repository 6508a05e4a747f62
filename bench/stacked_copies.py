"""Benchmark: many small trainings in one compiled step (`batched.Copies`) against one at a time, and the FLOP limit.

    python -m bench.stacked_copies [--epochs 10] [--out bench/stacked_copies.md]

The fair race trains repetitions x tuning settings of each variant: many independent copies of the
DNN5 (784-300-50-50-50-50-5) on 400 images (80 per class x 5) at batch 32. For a network this
small, per-step overhead rather than arithmetic decides the speed, so this measures, in one run:
the machine's matmul rate (a 2048^3 float32 matmul, the FLOP limit's rate), `training.fit` on one
model, and `batched.Copies` at K copies, each as milliseconds per model-epoch and as a ratio to the
FLOP limit (6 FLOPs per weight per training example: forward, and backward for weights and inputs).
Medians over the timed epochs, after a warm-up epoch that also traces. Each TensorFlow op runs on
one thread here (transferlab/__init__.py); the side-by-side rows train one stack per core at once,
as a race does (`batched.train_concurrently`), and are timed by the wall clock over all of them.
The FLOP limit uses the matmul rate on all cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HIDDEN = [300, 50, 50, 50, 50]
IMAGES, BATCH, CLASSES, FEATURES = 400, 32, 5, 784


def matmul_gflops(size: int = 2048, repeats: int = 7) -> float:
    """The machine's float32 matmul rate on every core: measured in a child process, since this one runs
    each TensorFlow op on one thread (transferlab/__init__.py) and would report one core's rate."""
    code = f"from bench.stacked_copies import _matmul_gflops; print(_matmul_gflops({size}, {repeats}))"
    from transferlab.training import engine

    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(engine.lanes())}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _matmul_gflops(size: int, repeats: int) -> float:
    import tensorflow as tf

    a, b = tf.random.normal([size, size]), tf.random.normal([size, size])
    f = tf.function(lambda: tf.matmul(a, b))
    f().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f().numpy()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times)) / 1e9


def weights_per_model() -> int:
    sizes = [FEATURES, *HIDDEN, CLASSES]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def solo_ms(epochs: int, optimizer) -> float:
    from transferlab.config import TrainSpec
    from transferlab.models import networks
    from transferlab.training import single

    rng = np.random.default_rng(0)
    x, y = rng.random((IMAGES, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, IMAGES)
    model = networks.build(FEATURES, networks.dnn_layers(HIDDEN, "relu", CLASSES), "he_normal", 0)
    history = single.fit(model, x, y, TrainSpec(epochs=epochs + 1, batch_size=BATCH, optimizer=optimizer, seed=1))
    return 1000 * float(np.median([row["seconds"] for row in history.rows[1:]]))


def stacked_ms(k: int, epochs: int, optimizer, frozen: int = 0) -> float:
    from transferlab.models import networks
    from transferlab.training import engine
    from transferlab.training.stopping import StopRule

    rng = np.random.default_rng(0)
    x, y = rng.random((IMAGES + 100, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, IMAGES + 100)
    layers = networks.dnn_layers(HIDDEN, "relu", CLASSES)
    models = [networks.build(FEATURES, layers, "he_normal", 0 if frozen else s) for s in range(k)]
    copies = [engine.Copy(np.arange(IMAGES), np.arange(IMAGES, IMAGES + 100), s, optimizer) for s in range(k)]
    stack = engine.Copies(models, x, y, copies, BATCH, StopRule(max_epochs=epochs + 1, patience=None))
    trained = [layer.name for layer in engine.dense_layers(models[0])][frozen:]
    stack.train(trained)
    return 1000 * float(np.median([row["seconds"] for row in stack.histories[0].rows[1:]]))  # per copy already


def side_by_side_ms(k: int, lanes: int, epochs: int, optimizer) -> tuple[float, float]:
    """`lanes` stacks of k copies each, trained at once on their own threads (`batched.train_concurrently`).

    Returns (wall ms per model-epoch over all stacks, one copy's own `seconds` per epoch in ms).
    """
    from transferlab.models import networks
    from transferlab.training import engine
    from transferlab.training.stopping import StopRule

    rng = np.random.default_rng(0)
    x, y = rng.random((IMAGES + 100, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, IMAGES + 100)
    layers = networks.dnn_layers(HIDDEN, "relu", CLASSES)

    def stack(lane: int) -> engine.Copies:
        models = [networks.build(FEATURES, layers, "he_normal", 100 * lane + s) for s in range(k)]
        copies = [engine.Copy(np.arange(IMAGES), np.arange(IMAGES, IMAGES + 100), s, optimizer) for s in range(k)]
        return engine.Copies(models, x, y, copies, BATCH, StopRule(max_epochs=epochs, patience=None))

    warm = stack(0)  # traces the shared program and runs its first (optimising) call
    warm.train([layer.name for layer in engine.dense_layers(warm.models[0])], epochs=1)
    stacks = [stack(lane) for lane in range(lanes)]
    names = [layer.name for layer in engine.dense_layers(stacks[0].models[0])]
    start = time.perf_counter()
    engine.train_concurrently([lambda s=s: s.train(names) for s in stacks], lanes)
    wall = time.perf_counter() - start
    own = 1000 * float(np.median([row["seconds"] for row in stacks[0].histories[0].rows]))
    return 1000 * wall / (lanes * k * epochs), own


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 5, 15, 30])
    parser.add_argument("--out", type=Path, default=Path("bench/stacked_copies.md"))
    args = parser.parse_args(argv)
    from transferlab.config import OptimizerSpec

    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    sgd, adam = OptimizerSpec(name="sgd", learning_rate=0.01), OptimizerSpec(name="adam", learning_rate=0.001)
    gflops = matmul_gflops()
    limit_ms = 1000 * 6 * weights_per_model() * IMAGES / (gflops * 1e9)
    rows = [("`training.fit`, one model, SGD", 1, solo_ms(args.epochs, sgd)),
            ("`training.fit`, one model, Adam", 1, solo_ms(args.epochs, adam))]
    for k in args.copies:
        rows.append((f"`engine.Copies`, {k} copies, SGD", k, stacked_ms(k, args.epochs, sgd)))
    for k in args.copies[-2:]:
        rows.append((f"`engine.Copies`, {k} copies, Adam", k, stacked_ms(k, args.epochs, adam)))
    from transferlab.training import engine

    lanes = engine.lanes()
    for k in args.copies[1:3]:
        wall, own = side_by_side_ms(k, lanes, args.epochs, sgd)
        rows.append((f"{lanes} stacks of {k} copies side by side, SGD (wall time over all copies; one copy's own"
                     f" share of its core: {own:.1f} ms)", lanes * k, wall))
    full = list(rows)  # every weight trained: the rows the FLOP limit is for
    k = args.copies[-2]
    rows.append((f"`engine.Copies`, {k} copies, SGD, hidden1-2 frozen (freeze2; limit is the full network's)", k,
                 stacked_ms(k, args.epochs, sgd, frozen=2)))
    gflops_after = matmul_gflops()
    solo = rows[0][2]
    lines = [
        "# Many small trainings in one compiled step", "",
        f"Command: `python -m bench.stacked_copies --epochs {args.epochs} --copies {' '.join(map(str, args.copies))}`  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC; {time.perf_counter() - t0:.0f} s wall; nproc {os.cpu_count()}; {platform.processor() or platform.machine()}  ",
        f"Workload: DNN5 ({weights_per_model():,} weights) on {IMAGES} images at batch {BATCH} ({-(-IMAGES // BATCH)} steps an epoch);"
        f" median of {args.epochs} epochs after a warm-up epoch.  ",
        f"FLOP limit: 6 x {weights_per_model():,} weights x {IMAGES} images = {6 * weights_per_model() * IMAGES / 1e9:.2f} GFLOP per"
        f" model-epoch at the matmul rate measured in this run ({gflops:.0f} GFLOP/s before, {gflops_after:.0f} after) ="
        f" **{limit_ms:.1f} ms**.", "",
        "| scenario | copies | ms per model-epoch | × FLOP limit | vs one `training.fit` |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {name} | {k} | {ms:.1f} | {ms / limit_ms:.1f}× | {solo / ms:.2f}× as fast |" for name, k, ms in rows]
    best = min(full[2:], key=lambda row: row[2])
    adam_solo, adam_best = rows[1][2], min(row[2] for row in full[2:] if "Adam" in row[0])
    lines += ["", f"Best stacked full training: {best[0]}, {best[2]:.1f} ms per model-epoch, {best[2] / limit_ms:.1f}× the"
              f" FLOP limit, {solo / best[2]:.2f}× as fast as one SGD model at a time ({solo:.1f} ms); with Adam the stack is"
              f" {adam_solo / adam_best:.2f}× as fast as one model ({adam_best:.1f} vs {adam_solo:.1f} ms).", ""]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
