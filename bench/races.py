"""One variant's race, run two ways, each in a process of its own: the project's and a plain-Keras peer.

    python -m bench.races project reuse5   # race.race, then the same race again on one core
    python -m bench.races keras reuse5     # model.fit per repetition x grid setting, one per core
    python -m bench.races flops cache2     # only the FLOPs of one copy-epoch (bench.flops)

Each prints one JSON line (seconds, copy-epochs, test accuracies, a fingerprint of the labelled draws).
Both read what `dvc repro` of the variant's upstream stages made (the prepared target, the init
model), draw the same labelled images and validation rows with the project's code
(`data.draw_labelled`), build the same network (`race.build_variant_network`) and train every
repetition x grid setting of params.yaml until early stopping with best weights restored; each
repetition keeps the setting with the lowest validation loss and scores it once on the test set.

The peer is plain Keras at its fastest honest settings: one `model.fit` per core at a time (worker
processes, started before the clock starts, as the project trains a stack per core), on tf.data (cache, shuffle,
batch, prefetch; the whole validation set one batch), `steps_per_execution` = one epoch's steps,
`EarlyStopping(min_delta, patience, restore_best_weights=True)` as `transfer.stopping`. Its
process sets its own TensorFlow threads and oneDNN (`--threads`, `--onednn`) before transferlab's
import would set the project's (one thread per op, oneDNN off: chosen for bit-reproducibility):
one thread per op, since on this 2-core machine that was faster for these small matmuls than
TensorFlow's default of every core, and oneDNN on, as TensorFlow ships.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Inputs:
    """What both races start from, read as `stages.transfer` reads it."""

    variant: Any  # config.VariantSpec
    network: Any  # config.NetworkSpec
    protocol: Any  # config.Protocol
    arrays: dict[str, np.ndarray]
    labels_per_class: int | None
    plan: list
    init_model: Any  # keras.Model


def load(name: str, seeds: int = 0) -> Inputs:
    """The variant's inputs; `seeds`: repetitions (0: `transfer.seeds` of params.yaml), the same for both sides."""
    from transferlab import data, paths
    from transferlab.config import load_params
    from transferlab.data import repetitions
    from transferlab.models import zoo

    params = load_params(paths.PARAMS)
    variant = params.variants[name]
    target = params.targets[variant.target]
    plan = repetitions.plan(seeds or params.transfer.seeds, params.transfer.seed, target.seed, params.transfer.resample_labels)
    return Inputs(variant, params.network_for(variant.init_from), params.protocol(variant), data.load_target(variant.target),
                  target.labels(), plan, zoo.load_keras(paths.init_model(variant.init_from)))


def draws(inputs: Inputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, validation rows) per repetition, drawn as `race.race` draws them."""
    from transferlab import data
    from transferlab.config import split_sizes

    y_pool, fraction = inputs.arrays["y_pool"], inputs.protocol.validation_fraction
    if inputs.labels_per_class is None:
        return [data.draw_all(y_pool, fraction, rep.labels_seed) for rep in inputs.plan]
    _, validation = split_sizes(inputs.labels_per_class, fraction)
    return [data.draw_labelled(y_pool, inputs.labels_per_class, validation, rep.labels_seed) for rep in inputs.plan]


def fingerprint(rows: list[tuple[np.ndarray, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for train, validation in rows:
        digest.update(np.asarray(train, np.int64).tobytes() + b"|" + np.asarray(validation, np.int64).tobytes())
    return digest.hexdigest()[:16]


def n_classes(arrays: dict[str, np.ndarray]) -> int:
    return int(max(arrays["y_pool"].max(), arrays["y_test"].max())) + 1


def pin_to_one_cpu() -> int:
    """Every thread of this process (TensorFlow's pools included) onto one CPU; new threads inherit it."""
    cpu = min(os.sched_getaffinity(0))
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {cpu})
    return cpu


def matmul_gflops(size: int = 2048, repeats: int = 5) -> list[float]:
    """float32 matmul rates of this process's TensorFlow (one per timed call, after a warm-up call)."""
    import tensorflow as tf

    a, b = tf.random.normal([size, size], seed=1), tf.random.normal([size, size], seed=2)
    product = tf.function(lambda: tf.matmul(a, b))
    product().numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        product().numpy()
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return rates


def project(name: str, seeds: int = 0) -> dict[str, Any]:
    """The project's race as its stage runs it (stacks side by side), then again on one pinned core."""
    from transferlab.training import engine, race

    inputs, lanes = load(name, seeds), engine.lanes()
    args = (inputs.variant, inputs.init_model, inputs.network, inputs.protocol, inputs.arrays, inputs.labels_per_class, inputs.plan)
    start = time.perf_counter()
    outcome = race.race(*args)
    race_s = time.perf_counter() - start
    cpu = pin_to_one_cpu()
    gflops = matmul_gflops()
    engine.lanes = lambda: 1  # one stack at a time; with every thread on one CPU: one core's work, validation included
    start = time.perf_counter()
    again = race.race(*args)
    single_s = time.perf_counter() - start
    accuracies = [r.target_accuracy for r in outcome.results]
    if accuracies != [r.target_accuracy for r in again.results]:
        raise AssertionError("the one-core race did not reproduce the race's results")
    return {"side": "project", "variant": name, "race_s": race_s, "single_thread_s": single_s, "cpu": cpu,
            "copy_epochs": sum(s.epochs_run for r in outcome.results for s in r.settings), "accuracies": accuracies,
            "draws": fingerprint(outcome.draws), "gflops_1t": gflops,
            "repetitions": len(inputs.plan), "settings": len(inputs.protocol.grid), "lanes": lanes,
            "flops": variant_flops(inputs)}


def variant_flops(inputs: Inputs) -> dict[str, Any]:
    """One copy-epoch's FLOPs of the variant's network as its race trains it (`bench.flops`), by part."""
    from bench import flops
    from transferlab.config import strategies
    from transferlab.training import race

    model, _ = race.build_variant_network(inputs.variant, inputs.init_model, inputs.network, n_classes(inputs.arrays),
                                          inputs.plan[0].seed)
    layers, fixed = flops.model_layers(model), inputs.variant.frozen_layers if strategies.STRATEGIES[inputs.variant.strategy].cached else 0
    train_rows, val_rows = (round(float(np.mean([len(d[i]) for d in draws(inputs)]))) for i in (0, 1))
    epoch = flops.epoch_flops(layers[fixed:], train_rows, val_rows)
    return {"forward": epoch.forward, "backward": epoch.backward, "validation": epoch.validation,
            "cache_once": flops.cache_flops(layers, fixed, len(inputs.arrays["y_pool"])),
            "train_rows": train_rows, "val_rows": val_rows, "layers": [vars(x) for x in layers[fixed:]]}


def _optimizer(spec: Any):
    import keras

    clip = {"clipvalue": spec.clip_value} if spec.clip_value is not None else {}
    if spec.name == "adam":
        return keras.optimizers.Adam(learning_rate=spec.learning_rate, **clip)
    momentum = spec.momentum if spec.name == "momentum" else 0.0
    return keras.optimizers.SGD(learning_rate=spec.learning_rate, momentum=momentum, **clip)


_WORKER: dict[str, Any] = {}


def _start_worker(name: str, seeds: int, threads: int, onednn: str) -> None:
    """A peer worker process: its TensorFlow settings before any import, then the inputs, once."""
    os.environ["TF_NUM_INTRAOP_THREADS"], os.environ["TF_ENABLE_ONEDNN_OPTS"] = str(threads), onednn
    inputs = load(name, seeds)
    _WORKER.update(inputs=inputs, rows=draws(inputs))


def _ready(_: int) -> bool:
    time.sleep(0.5)  # long enough that every worker is started (and has loaded the inputs) before the clock starts
    return True


def _fit(job: tuple[int, int]) -> dict[str, Any]:
    """One repetition x grid setting: `model.fit` with early stopping, then the test set scored."""
    import keras
    import tensorflow as tf

    from transferlab.training import race

    inputs, (r, j) = _WORKER["inputs"], job
    protocol, stopping, arrays, rep = inputs.protocol, inputs.protocol.stopping, inputs.arrays, inputs.plan[r]
    (train_rows, val_rows), x, y = _WORKER["rows"][r], arrays["x_pool"], arrays["y_pool"]
    keras.utils.set_random_seed(rep.seed)
    train = (tf.data.Dataset.from_tensor_slices((x[train_rows], y[train_rows])).cache()
             .shuffle(len(train_rows), seed=rep.seed).batch(protocol.batch_size).prefetch(tf.data.AUTOTUNE))
    validation = tf.data.Dataset.from_tensor_slices((x[val_rows], y[val_rows])).batch(len(val_rows)).cache()
    model, _ = race.build_variant_network(inputs.variant, inputs.init_model, inputs.network, n_classes(arrays), rep.seed)
    model.compile(optimizer=_optimizer(protocol.grid[j]), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=math.ceil(len(train_rows) / protocol.batch_size), jit_compile=False)
    stop = keras.callbacks.EarlyStopping(monitor=stopping.monitor, min_delta=stopping.min_delta, patience=stopping.patience,
                                         restore_best_weights=True)
    history = model.fit(train, validation_data=validation, epochs=stopping.max_epochs, callbacks=[stop], verbose=0)
    accuracy = model.evaluate(arrays["x_test"], arrays["y_test"], batch_size=len(arrays["y_test"]), verbose=0)[1]
    return {"r": r, "best": float(stop.best if stopping.monitor.endswith("loss") else -stop.best),
            "epochs": len(history.epoch), "accuracy": float(accuracy)}


def keras_peer(name: str, seeds: int, workers: int, threads: int, onednn: str) -> dict[str, Any]:
    """Plain Keras: one `model.fit` per repetition x grid setting, `workers` processes side by side (one per core)."""
    from transferlab import paths
    from transferlab.config import load_params

    params = load_params(paths.PARAMS)
    repetitions, settings = seeds or params.transfer.seeds, len(params.protocol(params.variants[name]).grid)
    jobs = [(r, j) for r in range(repetitions) for j in range(settings)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(name, seeds, threads, onednn)) as pool:
        list(pool.map(_ready, range(workers)))
        start = time.perf_counter()
        fits = list(pool.map(_fit, jobs))
        race_s = time.perf_counter() - start
        draws_seen = pool.submit(_fingerprint_in_worker).result()
    chosen = [min((f for f in fits if f["r"] == r), key=lambda f: f["best"]) for r in range(repetitions)]  # first on ties
    return {"side": "keras", "variant": name, "race_s": race_s, "copy_epochs": sum(f["epochs"] for f in fits),
            "accuracies": [f["accuracy"] for f in chosen], "draws": draws_seen, "workers": workers, "threads": threads,
            "onednn": onednn}


def _fingerprint_in_worker() -> str:
    return fingerprint(_WORKER["rows"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["project", "keras", "flops"])
    parser.add_argument("variant")
    parser.add_argument("--threads", type=int, default=1, help="keras: threads per op (0: TensorFlow's default, every core)")
    parser.add_argument("--seeds", type=int, default=0, help="repetitions (0: transfer.seeds of params.yaml)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="keras: fits side by side (processes)")
    parser.add_argument("--onednn", choices=["0", "1"], default="1", help="keras: oneDNN kernels (TensorFlow's default: 1)")
    args = parser.parse_args(argv)
    if args.side == "keras":
        result = keras_peer(args.variant, args.seeds, args.workers, args.threads, args.onednn)
    elif args.side == "flops":
        result = {"side": "flops", "variant": args.variant, "flops": variant_flops(load(args.variant, args.seeds))}
    else:
        result = project(args.variant, args.seeds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
