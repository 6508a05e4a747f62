"""Benchmark: a CNN variant race, the project's (`race.race`, the Keras-layers engine) against a plain-Keras peer.

    python -m bench.cnn_race [--seeds 2] [--max-epochs N] [--rounds 1] [--variants scratch reuse3 freeze2]
                             [--source-model PATH] [--no-one-core] [--out bench/cnn_race.md]

Needs the prepared mnist target and its source's data, where `dvc repro` puts them (e.g. `dvc repro -s
inputs/dvc.yaml:prepare_source@source inputs/dvc.yaml:prepare_target@mnist`). The CNN source is
`--source-model`, else the model file of a `sources:` entry with `network.conv` if one was made,
else trained here on the mnist target's source task (`NETWORK`, `SOURCE_EPOCHS` epochs of Adam at
`SOURCE_RATE`, seed `SOURCE_SEED`; not timed). Its blocks are conv1, conv2, hidden1, then the output; the variants
(`VARIANTS`) keep that architecture with a new output: from scratch, all reused and trained, or the
two conv blocks frozen (run in inference mode, as `keras_copies` runs a frozen base).

Per round and variant, in this one process: the project's race (params.yaml's grid, stopping and
batch size, `--seeds` repetitions, `--max-epochs` as the cap), then the plain-Keras peer on the
same draws and network (`bench.races._fit`: `model.fit` + `EarlyStopping` per repetition x setting,
one worker process per core, started before the clock). Then, every thread pinned to one CPU: the
float32 matmul rate (`bench.races.matmul_gflops`), each variant network's own forward rate at the
training batch size, and (unless `--no-one-core`) each project race again one stack at a time,
its results checked identical to the first round's. FLOPs per copy-epoch: `bench.flops`.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench import races
from bench.race_vs_keras import cpu_model, load_average, mflop, spread, versions

TARGET = "mnist"
NETWORK = {"conv": [8, 16], "hidden_units": [32]}  # the CNN source trained here (models/architectures.py)
SOURCE_EPOCHS, SOURCE_RATE, SOURCE_SEED = 5, 0.01, 42  # ~88 % on the source test set (0.001: ~25 % after 3)
VARIANTS = {  # blocks: conv1, conv2, hidden1 (and the output, always new)
    "scratch": {"strategy": "scratch", "reuse_layers": 3},
    "reuse3": {"strategy": "reuse", "reuse_layers": 3},
    "freeze2": {"strategy": "freeze", "reuse_layers": 3, "frozen_layers": 2},
}
_ARRAYS: dict[str, Any] = {}


def inputs_for(name: str, seeds: int, max_epochs: int, init_model: Any, network: dict) -> races.Inputs:
    """A CNN variant's race inputs: params.yaml's protocol (its cap lowered to `max_epochs`), `seeds` repetitions."""
    from transferlab import data, paths
    from transferlab.config import NetworkSpec, VariantSpec, load_params
    from transferlab.data import repetitions

    params = load_params(paths.PARAMS)
    target, protocol = params.targets[TARGET], params.protocol()
    if max_epochs:
        protocol = protocol.model_copy(update={"stopping": protocol.stopping.model_copy(update={"max_epochs": max_epochs})})
    plan = repetitions.plan(seeds, params.transfer.seed, target.seed, params.transfer.resample_labels)
    if "arrays" not in _ARRAYS:
        _ARRAYS["arrays"] = data.load_target(TARGET)
    variant = VariantSpec(init_from="cnn_source", target=TARGET, **VARIANTS[name])
    return races.Inputs(variant, NetworkSpec(**network), protocol, _ARRAYS["arrays"], target.labels(), plan, init_model)


def source_model(path: Path | None, save_to: Path) -> tuple[Any, dict, str]:
    """(the CNN source, its network spec, where it came from); saved to `save_to` for the peer's workers."""
    import keras

    from transferlab import paths
    from transferlab.config import NetworkSpec, load_params
    from transferlab.data import datafiles
    from transferlab.models import architectures, zoo

    params = load_params(paths.PARAMS)
    declared = [name for name, spec in params.sources.items() if spec.network.conv and paths.init_model(name).is_file()]
    if path is None and declared:
        path, network = paths.init_model(declared[0]), params.sources[declared[0]].network.model_dump()
    else:
        network = NETWORK
    if path is not None:
        model, origin = zoo.load_keras(path), f"loaded from `{path}`"
    else:
        source = params.targets[TARGET].source
        arrays = datafiles.load_npz(paths.source_data(source), ("x_train", "y_train", "x_test", "y_test"))
        keras.utils.set_random_seed(SOURCE_SEED)
        n_classes = int(arrays["y_train"].max()) + 1
        model = architectures.source_network(NetworkSpec(**network), arrays["x_train"].shape[1:], n_classes, SOURCE_SEED)
        model.compile(optimizer=keras.optimizers.Adam(SOURCE_RATE), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.perf_counter()
        model.fit(arrays["x_train"], arrays["y_train"], batch_size=32, epochs=SOURCE_EPOCHS, shuffle=True, verbose=0)
        accuracy = model.evaluate(arrays["x_test"], arrays["y_test"], verbose=0)[1]
        origin = (f"trained here on `{paths.source_data(source)}` ({len(arrays['y_train'])} images): {SOURCE_EPOCHS} epochs of"
                  f" Adam {SOURCE_RATE:g}, batch 32, seed {SOURCE_SEED}, {time.perf_counter() - start:.0f} s;"
                  f" source test accuracy {100 * accuracy:.1f} %")
    model.save(save_to)
    return model, network, origin


def project_race(inputs: races.Inputs) -> dict[str, Any]:
    from transferlab.training import race

    start = time.perf_counter()
    outcome = race.race(inputs.variant, inputs.init_model, inputs.network, inputs.protocol, inputs.arrays,
                        inputs.labels_per_class, inputs.plan)
    return {"race_s": time.perf_counter() - start, "copy_epochs": sum(s.epochs_run for r in outcome.results for s in r.settings),
            "accuracies": [r.target_accuracy for r in outcome.results], "draws": races.fingerprint(outcome.draws),
            "epoch_s": float(np.median([row["seconds"] for rows in outcome.histories for row in rows]))}


_STASH: dict[str, races.Inputs] = {}


def _start_worker(model_path: str, network: dict, names: list[str], seeds: int, max_epochs: int, threads: int,
                  onednn: str) -> None:
    """A peer worker: its TensorFlow settings before any import (as `bench.races`), then every variant's inputs, once."""
    os.environ["TF_NUM_INTRAOP_THREADS"], os.environ["TF_ENABLE_ONEDNN_OPTS"] = str(threads), onednn
    from transferlab.models import zoo

    quiet()
    init = zoo.load_keras(Path(model_path))
    _STASH.update({name: inputs_for(name, seeds, max_epochs, init, network) for name in names})
    races._WORKER["rows"] = races.draws(_STASH[names[0]])  # the same plan, hence the same draws, for every variant


def quiet() -> None:
    """No retracing warnings: every stack and every `fit` traces its own functions, by design on both sides."""
    import logging

    import tensorflow  # noqa: F401  (its logger exists once it is imported)

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _fit(job: tuple[str, int, int]) -> dict[str, Any]:
    name, r, j = job
    races._WORKER["inputs"] = _STASH[name]
    return races._fit((r, j))


def peer_race(pool: ProcessPoolExecutor, workers: int, name: str, inputs: races.Inputs) -> dict[str, Any]:
    """`model.fit` per repetition x setting, `workers` side by side; each repetition keeps its lowest validation loss."""
    jobs = [(name, r, j) for r in range(len(inputs.plan)) for j in range(len(inputs.protocol.grid))]
    list(pool.map(races._ready, range(workers)))
    start = time.perf_counter()
    fits = list(pool.map(_fit, jobs))
    race_s = time.perf_counter() - start
    chosen = [min((f for f in fits if f["r"] == r), key=lambda f: f["best"]) for r in range(len(inputs.plan))]
    return {"race_s": race_s, "copy_epochs": sum(f["epochs"] for f in fits), "accuracies": [f["accuracy"] for f in chosen],
            "draws": pool.submit(races._fingerprint_in_worker).result()}


def forward_gflops(inputs: races.Inputs, flops_per_row: float, repeats: int = 20) -> float:
    """The variant network's own forward pass (inference mode) at the training batch size: its FLOP rate, median of `repeats`."""
    import tensorflow as tf

    from transferlab.training import race

    model, _ = race.build_variant_network(inputs.variant, inputs.init_model, inputs.network, races.n_classes(inputs.arrays),
                                          inputs.plan[0].seed)
    batch = tf.constant(inputs.arrays["x_pool"][: inputs.protocol.batch_size])
    forward = tf.function(lambda x: model(x, training=False))
    forward(batch).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(batch).numpy()
        times.append(time.perf_counter() - start)
    return flops_per_row * int(batch.shape[0]) / float(np.median(times)) / 1e9


def one_core(inputs: dict[str, races.Inputs], first: dict[str, dict], again: bool) -> dict[str, Any]:
    """Every thread on one CPU: the matmul rate, each network's forward rate and (when `again`) each race one stack at a time."""
    from transferlab.training import engine

    out: dict[str, Any] = {"cpu": races.pin_to_one_cpu(), "gflops_1t": races.matmul_gflops(), "forward": {}, "race": {}}
    for name, x in inputs.items():
        f = races.variant_flops(x)
        out["forward"][name] = forward_gflops(x, (f["forward"] + f["validation"]) / (f["train_rows"] + f["val_rows"]))
    engine.lanes = lambda: 1
    for name, x in inputs.items() if again else ():
        out["race"][name] = project_race(x)
        if out["race"][name]["accuracies"] != first[name]["accuracies"]:
            raise AssertionError(f"{name}: the one-core race did not reproduce the first race's results")
    return out


def report(args: argparse.Namespace, command: str, started: datetime, wall: float, loads: tuple[str, str], origin: str,
           inputs: dict[str, races.Inputs], project: dict[str, list], keras: dict[str, list], core: dict[str, Any]) -> str:
    first = next(iter(inputs.values()))
    stopping, rate = first.protocol.stopping, float(np.median(core["gflops_1t"]))
    lines = ["# Speed: a CNN race, the project's Keras-layers engine against plain Keras, and its FLOP limit", "",
             f"Command: `{command}`  ", f"Date: {started:%Y-%m-%d %H:%M} UTC; the whole benchmark {wall:.0f} s wall.  ",
             f"Machine: {cpu_model()} (/proc/cpuinfo), {os.cpu_count()} cores; {versions()}.  ",
             (f"Load average (1, 5, 15 min) before: {loads[0]}; after: {loads[1]}. A shared machine: other jobs ran beside"
             " this one, so every time is indicative; medians (min–max) over rounds, ratios per round."), "",
             f"CNN source: conv {NETWORK['conv']} (3×3 stride-2 Conv2D, BatchNormalization, ReLU), global average"
             f" pooling, Dense {NETWORK['hidden_units']}, softmax; {origin}. Target `{TARGET}`, {len(first.plan)} repetitions"
             f" × {len(first.protocol.grid)} settings (params.yaml's grid), batch {first.protocol.batch_size}, early stopping"
             f" (patience {stopping.patience}, min_delta {stopping.min_delta}) capped at {stopping.max_epochs} epochs,"
             f" {args.rounds} round(s). Variants: " + "; ".join(f"{n} {VARIANTS[n]}" for n in inputs) + ".", "",
             ("| variant | race wall s: project | plain Keras | ms per copy-epoch: project | plain Keras | **× faster per"
             " copy-epoch** | project engine epoch, ms | copy-epochs: project / Keras | test accuracy %: project / Keras | same draws |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in inputs:
        ours, theirs = project[name], keras[name]
        ms_ours = [1000 * p["race_s"] / p["copy_epochs"] for p in ours]
        ms_theirs = [1000 * k["race_s"] / k["copy_epochs"] for k in theirs]
        ratio = [k / p for p, k in zip(ms_ours, ms_theirs, strict=True)]
        same = all(p["draws"] == k["draws"] for p, k in zip(ours, theirs, strict=True))
        lines.append(f"| {name} | {spread([p['race_s'] for p in ours])} | {spread([k['race_s'] for k in theirs])}"
                     f" | {spread(ms_ours)} | {spread(ms_theirs)} | **{spread(ratio, 2)}×** | {spread([1000 * p['epoch_s'] for p in ours])}"
                     f" | {int(np.median([p['copy_epochs'] for p in ours]))} / {int(np.median([k['copy_epochs'] for k in theirs]))}"
                     f" | {100 * np.mean(ours[0]['accuracies']):.1f} / {100 * np.mean(theirs[0]['accuracies']):.1f}"
                     f" | {'yes' if same else '**no**'} |")
    lines += ["", ("Project: `race.race` in this process, its stacks side by side (one per core), each stack one clone of the"
              " network with each copy's variables and optimizer state swapped in per epoch (`training/keras_copies.py`);"
              " one thread per op, oneDNN off (the project's settings). Plain Keras (`bench/races.py`'s `_fit`): `model.fit`"
              " on tf.data, `steps_per_execution` = one epoch, `EarlyStopping(restore_best_weights=True)`, one fit per core"
              f" in {args.workers} worker processes, {args.threads} thread(s) per op, oneDNN {'on' if args.onednn == '1' else 'off'}."
              " ms per copy-epoch = the race's wall time (building, tracing, training, validation, test scoring) over the"
              " copy-epochs it trained. *Engine epoch*: the median time of one copy's compiled training epoch in the chosen"
              " copies' histories (training only: no validation, no variable swapping, no tracing but the first epoch's)."),
              "", "## FLOPs per copy-epoch and the single-thread limit", "",
              (f"Single-thread float32 matmul rate (2048³, one thread, oneDNN off, pinned to CPU {core['cpu']}): median"
              f" **{rate:.1f} GFLOP/s** (min {min(core['gflops_1t']):.1f}, max {max(core['gflops_1t']):.1f}). Counted by"
              " `bench/flops.py`: 2 FLOPs per multiply-add of the convolutions and Dense layers, forward, backward as computed"
              " (no input gradient below the lowest trained layer), validation; BatchNormalization, activations and pooling"
              " are not counted. *Forward rate*: the variant network's own inference pass on one batch, on the same core."), "",
              ("| variant | layers: multiply-adds per image (trained ✓) | rows train + val | forward | backward | validation"
              " | MFLOP per copy-epoch | 1-core limit at the matmul rate, ms | forward rate, GFLOP/s | limit at it, ms"
              " | measured on 1 core, ms per copy-epoch | × limit: matmul / forward |"),
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, x in inputs.items():
        f = races.variant_flops(x)
        total = f["forward"] + f["backward"] + f["validation"]
        limit, forward_limit = 1000 * total / (rate * 1e9), 1000 * total / (core["forward"][name] * 1e9)
        layers = " ".join(f"{y['name']} {y['positions'] * y['window'] * y['inputs'] * y['units'] // y['groups']:,}"
                          f"{'✓' if y['trained'] else ''}" for y in f["layers"])
        run = core["race"].get(name)
        measured = 1000 * run["race_s"] / run["copy_epochs"] if run else None
        timed = f"{measured:.1f} | {measured / limit:.0f}× / {measured / forward_limit:.1f}×" if measured else "not run | –"
        lines.append(f"| {name} | {layers} | {f['train_rows']} + {f['val_rows']} | {mflop(f['forward'])}"
                     f" | {mflop(f['backward'])} | {mflop(f['validation'])} | **{mflop(total)}** | {limit:.2f}"
                     f" | {core['forward'][name]:.1f} | {forward_limit:.1f} | {timed} |")
    lines += ["", ("Measured on 1 core: each variant's race once more after the rounds, one stack at a time, every thread"
              " pinned to one CPU, over its copy-epochs; its test accuracies checked equal to the first round's."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="repetitions per race, both sides")
    parser.add_argument("--max-epochs", type=int, default=0, help="cap on epochs per copy (0: params.yaml's)")
    parser.add_argument("--rounds", type=int, default=1, help="project, then Keras, per variant, this many times")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--source-model", type=Path, default=None, help="a .keras CNN source (default: found or trained)")
    parser.add_argument("--no-one-core", action="store_true", help="skip the one-core rerun of each project race")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="keras: fits side by side (processes)")
    parser.add_argument("--threads", type=int, default=1, help="keras: threads per op (0: TensorFlow's default)")
    parser.add_argument("--onednn", choices=["0", "1"], default="1", help="keras: oneDNN kernels (TensorFlow's default: 1)")
    parser.add_argument("--out", type=Path, default=Path("bench/cnn_race.md"))
    args = parser.parse_args(argv)
    command = "python -m bench.cnn_race" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    started, t0, load_before = datetime.now(UTC), time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "cnn_source.keras"
        init, network, origin = source_model(args.source_model, saved)
        quiet()
        print(f"source: {origin}", flush=True)
        inputs = {name: inputs_for(name, args.seeds, args.max_epochs, init, network) for name in args.variants}
        project: dict[str, list] = {name: [] for name in inputs}
        keras: dict[str, list] = {name: [] for name in inputs}
        context = multiprocessing.get_context("spawn")
        init_args = (str(saved), network, args.variants, args.seeds, args.max_epochs, args.threads, args.onednn)
        with ProcessPoolExecutor(args.workers, mp_context=context, initializer=_start_worker, initargs=init_args) as pool:
            for round_ in range(args.rounds):
                for name, x in inputs.items():
                    project[name].append(project_race(x))
                    keras[name].append(peer_race(pool, args.workers, name, x))
                    p, k = project[name][-1], keras[name][-1]
                    print(f"round {round_ + 1} {name}: project {p['race_s']:.1f} s / {p['copy_epochs']} copy-epochs,"
                          f" keras {k['race_s']:.1f} s / {k['copy_epochs']}", flush=True)
    core = one_core(inputs, {name: runs[0] for name, runs in project.items()}, not args.no_one_core)
    text = report(args, command, started, time.perf_counter() - t0, (load_before, load_average()), origin, inputs, project,
                  keras, core)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
