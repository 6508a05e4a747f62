"""Benchmark: the project's race against a plain-Keras peer per variant, and its FLOP limit on one core.

    python -m bench.race_vs_keras [--rounds 3] [--seeds 3] [--variants scratch reuse5 freeze2] [--flops-only cache2]
                                  [--out bench/results.md]     # and the raw measurements beside it, bench/results.json

Needs the prepared target and init model of the variants (e.g. `dvc repro -s validate
inputs/dvc.yaml:prepare_source@source inputs/dvc.yaml:prepare_target@mnist inputs/dvc.yaml:pretrain_source@source`).
Each round runs, per variant, `python -m bench.races project <v>` and then `python -m bench.races keras <v>`
(A B A B …, each a fresh process), so both sides see the same machine load within a round. A
"stage" here is such a process: imports, reading the inputs, the race, scoring the test set; no DVC
and no MLflow (a `dvc repro -f -s` of `transfer@<v>` adds both). Ratios are per round, then the
median; a ranking whose order flips between rounds is reported as a tie.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def child(side: str, variant: str, seeds: int) -> dict:
    """One race in a fresh process; its JSON line plus `process_s`, the process's whole wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench.races", side, variant, "--seeds", str(seeds)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"bench.races {side} {variant} failed:\n{out.stderr[-3000:]}")
    print(f"  {side:7s} {variant:8s} {wall:6.1f} s", flush=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": wall}


def spread(values: Sequence[float], digits: int = 1) -> str:
    """`median (min–max)` of a measurement repeated over rounds."""
    return f"{np.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def ranking(samples: dict[str, Sequence[float]]) -> str:
    """Names from the smallest median up; `<` where every round agrees on the order, `≈` (a tie) where it flips."""
    names = sorted(samples, key=lambda name: float(np.median(samples[name])))
    text = names[0]
    for low, high in pairwise(names):
        always = all(a < b for a, b in zip(samples[low], samples[high], strict=True))
        text += (" < " if always else " ≈ ") + high
    return text


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def mflop(flops: float) -> str:
    return f"{flops / 1e6:.1f}"


def flop_table(project: dict[str, list[dict]], counted: dict[str, dict]) -> list[str]:
    """The FLOP limit on one core per variant, against the same race run on one pinned core."""
    rates = [rate for runs in project.values() for run in runs for rate in run["gflops_1t"]]
    rate = float(np.median(rates))
    lines = [f"Single-thread float32 matmul rate (2048³, TensorFlow as the project runs it: one thread, oneDNN off), measured"
             f" in every project process of this run after pinning it to one CPU: median **{rate:.1f} GFLOP/s**"
             f" (min {min(rates):.1f}, max {max(rates):.1f}, n = {len(rates)}).", "",
             "| variant | dense layers (trained ✓) | rows train + val | forward | backward | validation | MFLOP per copy-epoch"
             " | 1-core limit, ms | measured on 1 core, ms per copy-epoch | × limit |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    measured = {}
    for name, f in [*((name, runs[0]["flops"]) for name, runs in project.items()), *counted.items()]:
        total = f["forward"] + f["backward"] + f["validation"]
        limit = 1000 * total / (rate * 1e9)
        runs = project.get(name, [])
        per_round = [1000 * run["single_thread_s"] / run["copy_epochs"] for run in runs]
        if per_round:
            measured[name] = per_round
        layers = " ".join(f"{x['inputs']}→{x['units']}{'✓' if x['trained'] else ''}" for x in f["layers"])
        once = f"; + {mflop(f['cache_once'])} MFLOP once per race (the cached pass)" if f["cache_once"] else ""
        timed = f"{spread(per_round)} | {np.median(per_round) / limit:.1f}×" if per_round else "not raced | –"
        lines.append(f"| {name} | {layers}{once} | {f['train_rows']} + {f['val_rows']} | {mflop(f['forward'])} | {mflop(f['backward'])}"
                     f" | {mflop(f['validation'])} | **{mflop(total)}** | {limit:.2f} | {timed} |")
    first = next(iter(project.values()))[0]
    lines += ["", f"Measured on one core: the variant's whole race ({first['repetitions']} repetitions × {first['settings']}"
              " settings, early stopping, test scoring) run a second time in the project process, one stack at a time, every"
              " thread pinned to one CPU, divided by its copy-epochs; its results are checked identical to the first"
              f" (two-lane) race's. Median (min–max) over {len(next(iter(project.values())))} rounds. Ranking,"
              f" cheapest first (≈: the order flipped between rounds): {ranking(measured)}."]
    return lines


def peer_table(project: dict[str, list[dict]], keras: dict[str, list[dict]]) -> tuple[list[str], list[str]]:
    """Project vs plain Keras per variant: wall per stage, ms per copy-epoch, their ratios, accuracies."""
    lines = ["| variant | stage wall s: project | plain Keras | **× faster per stage** | ms per copy-epoch: project | plain Keras"
             " | **× faster per copy-epoch** | copy-epochs: project / Keras | test accuracy %: project / Keras | same draws |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    headline = []
    for name, theirs in keras.items():
        ours = project[name]
        stage = [k["process_s"] / p["process_s"] for p, k in zip(ours, theirs, strict=True)]
        ms_ours = [1000 * p["race_s"] / p["copy_epochs"] for p in ours]
        ms_theirs = [1000 * k["race_s"] / k["copy_epochs"] for k in theirs]
        per_epoch = [k / p for p, k in zip(ms_ours, ms_theirs, strict=True)]
        acc_ours = [100 * float(np.mean(p["accuracies"])) for p in ours]
        acc_theirs = [100 * float(np.mean(k["accuracies"])) for k in theirs]
        same = all(p["draws"] == k["draws"] for p, k in zip(ours, theirs, strict=True))
        copies = f"{int(np.median([p['copy_epochs'] for p in ours]))} / {int(np.median([k['copy_epochs'] for k in theirs]))}"
        lines.append(f"| {name} | {spread([p['process_s'] for p in ours])} | {spread([k['process_s'] for k in theirs])}"
                     f" | **{spread(stage, 2)}×** | {spread(ms_ours)} | {spread(ms_theirs)} | **{spread(per_epoch, 1)}×**"
                     f" | {copies} | {spread(acc_ours)} / {spread(acc_theirs)} | {'yes' if same else '**no**'} |")
        verdict = "faster in every round" if min(stage) > 1 else "slower in every round" if max(stage) < 1 else "a tie (flips)"
        headline.append(f"{name} {np.median(stage):.2f}× per stage ({verdict}), {np.median(per_epoch):.1f}× per copy-epoch")
    return lines, headline


def versions() -> str:
    found = []
    for package in ("tensorflow", "tensorflow-cpu", "keras", "numpy"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}; " + "; ".join(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["scratch", "reuse5", "freeze2"], help="raced both ways")
    parser.add_argument("--flops-only", nargs="*", default=["cache2"], help="FLOPs counted, not raced")
    parser.add_argument("--seeds", type=int, default=3, help="repetitions per race, both sides (0: params.yaml's)")
    parser.add_argument("--out", type=Path, default=Path("bench/results.md"))
    args = parser.parse_args(argv)
    command = "python -m bench.race_vs_keras" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    started, t0, load_before = datetime.now(UTC), time.perf_counter(), load_average()
    project: dict[str, list[dict]] = {name: [] for name in args.variants}
    keras: dict[str, list[dict]] = {name: [] for name in args.variants}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1} of {args.rounds} (load {load_average()})", flush=True)
        for name in project:
            project[name].append(child("project", name, args.seeds))
            keras[name].append(child("keras", name, args.seeds))
    counted = {name: child("flops", name, args.seeds)["flops"] for name in args.flops_only}
    wall, load_after = time.perf_counter() - t0, load_average()
    flops = flop_table(project, counted)
    peers, headline = peer_table(project, keras)
    first = project[args.variants[0]][0]
    busy = max(float(load_before.split()[0]), float(load_after.split()[0])) > 0.5
    lines = [
        "# Speed: the project's race against plain Keras, and its FLOP limit on one core", "",
        f"Command: `{command}`  ",
        f"Date: {started:%Y-%m-%d %H:%M} UTC; the whole benchmark {wall:.0f} s wall, one run.  ",
        f"Machine: {cpu_model()} (/proc/cpuinfo), {os.cpu_count()} cores; {versions()}.  ",
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}."
        + (" Other engineers were using the machine's cores at the same time: every wall time here is from a shared"
           " machine, which is why each is a median over rounds with its range." if busy else ""), "",
        "## Per stage: the project against the fastest honest plain-Keras race", "",
        f"Each variant with params.yaml's tuning grid ({first['settings']} settings) and stopping, {first['repetitions']}"
        " repetitions (`--seeds`; params.yaml races 5, and `-S transfer.seeds=3` is the documented shorter run), early stopping (`transfer.stopping`), the setting with the lowest validation loss kept, test set scored once."
        f" {args.rounds} interleaved rounds (project, Keras, per variant); median (min–max) over rounds; ratios computed per"
        " round. **Stage** = a fresh `python -m bench.races <side> <variant>` process: imports, inputs, race, test"
        " scoring — the project's race is `race.race` called in-process (no DVC, no MLflow; `dvc repro -f -s"
        " variants/dvc.yaml:transfer@<v>` adds both to the project's side only). **ms per copy-epoch** = the race's wall"
        " time (network building, tracing, training, validation, choosing, not imports) over the copy-epochs it trained.",
        "",
        *peers, "",
        "Headline (ratio = plain Keras's time over the project's): " + "; ".join(headline) + ".", "",
        "The plain-Keras peer (`bench/races.py`): `model.fit` per repetition × setting on tf.data (cache, shuffle, batch,"
        " prefetch; validation one batch), `steps_per_execution` = one epoch's steps, `jit_compile=False`,"
        " `EarlyStopping(monitor=val_loss, min_delta=0.001, patience=10, restore_best_weights=True)`, one thread per op"
        " (`--threads 1`, faster here than TensorFlow's default of every core; see docs/speed.md), oneDNN as TensorFlow"
        " ships it (on). The same draws (`data.draw_labelled`, fingerprints compared: column *same draws*) and the same"
        " network (`race.build_variant_network`). It runs one `fit` per core at a time, in worker processes started"
        " (and their inputs loaded) before its clock starts, as the project trains two stacks side by side.", "",
        "## FLOPs per copy-epoch and the single-thread limit", "",
        "Counted from the network actually trained (`bench/flops.py`): 2 FLOPs per multiply-add of the dense matmuls;"
        " forward over the training rows, backward as computed (weight gradients of trained layers, input gradients only"
        " above the lowest trained layer; frozen layers below it forward only), and the validation pass. A cached"
        " variant's copy-epoch is its upper network's.", "",
        *flops, "",
    ]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps({"project": project, "keras": keras, "flops": counted}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
