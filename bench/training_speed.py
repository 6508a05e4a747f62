"""Training-speed benchmark for the DNN5 (not a test): seconds per epoch, and `cache` vs `freeze`.

    python -m bench.training_speed [--rows 60000] [--repeats 5] [--rounds 2] [--out bench/training_speed.md]

Every scenario runs in its own fresh Python process, so one framework's threads, traced
functions or allocator state cannot leak into the next, and `ru_maxrss` is a per-scenario peak.
Data are random float32 pixels in [0, 1) and random labels in 0..4, made in memory (content
does not matter for speed). Each scenario runs one warm-up epoch (which also traces/compiles),
then `--repeats` timed epochs. The whole list of scenarios is run `--rounds` times, interleaved
(a b c … a b c …), so a burst of load from another process hits every scenario rather than one;
the table quotes the median and min–max of all timed epochs of a scenario, pooled over rounds,
and each round's median. Defaults (5 repeats, 2 rounds) take about 3 minutes on 2 cores.

TensorFlow scenarios call `training.make_deterministic(42)` first, as the pipeline's stages do.
TF's intra-op pool is left at its default (0 = one thread per core); PyTorch is given
`torch.set_num_threads(<cores available>)`, the same number.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

INPUTS, CLASSES, HIDDEN, BATCH, LR, CLIP, SEED = 784, 5, [300, 50, 50, 50, 50], 200, 0.01, 1.0, 42
RESULT = "RESULT "


# --------------------------------------------------------------------------- shared helpers


def make_data(rows: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.random((rows, INPUTS), dtype=np.float32), rng.integers(0, CLASSES, rows).astype(np.int64)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def summary(epoch_seconds: list[float], warmup: float, **extra) -> dict:
    return {
        "median": statistics.median(epoch_seconds),
        "min": min(epoch_seconds),
        "max": max(epoch_seconds),
        "warmup": warmup,
        "epochs": epoch_seconds,
        **extra,
    }


def timed_calls(step, repeats: int) -> list[float]:
    """Wall seconds of `repeats + 1` calls of step(i); the first is the warm-up."""
    seconds = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        step(i)
        seconds.append(time.perf_counter() - start)
    return seconds


def _tf_setup():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from transferlab.training import single as training

    training.make_deterministic(SEED)
    return training


def _train_spec():
    from transferlab.config import OptimizerSpec, TrainSpec

    return TrainSpec(epochs=1, batch_size=BATCH, optimizer=OptimizerSpec(name="sgd", learning_rate=LR, clip_value=CLIP), seed=SEED)


def _dnn5(seed: int = 0):
    from transferlab.models import networks

    return networks.build(INPUTS, networks.dnn_layers(HIDDEN, "relu", CLASSES), "he_normal", seed)


# --------------------------------------------------------------------------- scenarios (child side)


def keras_fit(rows: int, repeats: int, steps_per_execution: int = 1) -> dict:
    _tf_setup()
    import keras

    x, y = make_data(rows)
    model = _dnn5()
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=LR, clipvalue=CLIP),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    seconds = timed_calls(lambda i: model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0), repeats)
    return summary(seconds[1:], seconds[0], jit_compile=bool(model.jit_compile))


def keras_default(rows: int, repeats: int) -> dict:
    return keras_fit(rows, repeats, 1)


def keras_spe100(rows: int, repeats: int) -> dict:
    return keras_fit(rows, repeats, 100)


def project_per_call(rows: int, repeats: int) -> dict:
    """`training.fit(epochs=1)` called repeatedly with first_epoch increasing (as the brief asks)."""
    training = _tf_setup()
    x, y = make_data(rows)
    model, spec = _dnn5(), _train_spec()
    reported = []
    seconds = timed_calls(lambda i: reported.append(training.fit(model, x, y, spec, first_epoch=i + 1).rows[0]["seconds"]), repeats)
    # main figure: wall seconds per call; `reported` is what History.seconds says for the same epochs
    return summary(seconds[1:], seconds[0], reported_median=statistics.median(reported[1:]), reported_warmup=reported[0])


def project_one_call(rows: int, repeats: int) -> dict:
    """One `training.fit` call of repeats + 1 epochs (how strategies use it); epoch 1 is the warm-up."""
    training = _tf_setup()
    x, y = make_data(rows)
    start = time.perf_counter()
    history = training.fit(_dnn5(), x, y, _train_spec(), epochs=repeats + 1)
    wall = time.perf_counter() - start
    seconds = [row["seconds"] for row in history.rows]
    return summary(seconds[1:], seconds[0], call_wall=wall)


def _variant(strategy: str, frozen: int):
    from transferlab.config import VariantSpec

    return VariantSpec(strategy=strategy, init_from="source", target="bench", reuse_layers=len(HIDDEN), frozen_layers=frozen)


def _variant_model(strategy: str, frozen: int):
    from transferlab.config import NetworkSpec
    from transferlab.training import race

    return race.build_variant_network(_variant(strategy, frozen), _dnn5(0), NetworkSpec(), CLASSES, SEED)[0]


def freeze(rows: int, repeats: int, frozen: int) -> dict:
    training = _tf_setup()
    x, y = make_data(rows)
    model = _variant_model("freeze", frozen)
    history = training.fit(model, x, y, _train_spec(), epochs=repeats + 1)
    seconds = [row["seconds"] for row in history.rows]
    return summary(seconds[1:], seconds[0], trainable=len(model.trainable_weights))


def cache(rows: int, repeats: int, frozen: int) -> dict:
    training = _tf_setup()
    from transferlab.config import NetworkSpec
    from transferlab.models import surgery
    from transferlab.training import race

    x, y = make_data(rows)
    model, blocks = race.build_variant_network(_variant("cache", frozen), _dnn5(0), NetworkSpec(), CLASSES, SEED)
    lower, upper, _ = surgery.split_after(model, blocks, frozen)
    start = time.perf_counter()
    features = training.predict(lower, x)  # what strategies.train_cached times as cache_seconds
    cache_seconds = time.perf_counter() - start
    start = time.perf_counter()
    training.predict(lower, x)
    cache_again = time.perf_counter() - start
    history = training.fit(upper, features, y, _train_spec(), epochs=repeats + 1)
    seconds = [row["seconds"] for row in history.rows]
    return summary(seconds[1:], seconds[0], cache_seconds=cache_seconds, cache_again=cache_again, features=int(features.shape[1]))


def torch_loop(rows: int, repeats: int, threads: int | None = None) -> dict:
    """`threads` None: as many as TF's default intra-op pool uses (one per available core)."""
    try:
        import torch
    except ImportError:
        return {"status": "not installed"}
    import numpy as np

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    x, y = (torch.from_numpy(a) for a in make_data(rows))
    sizes = [INPUTS, *HIDDEN]
    layers: list = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], CLASSES))  # softmax folded into the loss
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    params = list(model.parameters())

    def epoch(i: int) -> None:
        order = torch.from_numpy(np.random.default_rng([SEED, i + 1]).permutation(rows))  # as training.epoch_order
        total, correct = torch.zeros(()), torch.zeros(())
        for start in range(0, rows, BATCH):
            index = order[start : start + BATCH]
            inputs, labels = x[index], y[index]
            optimizer.zero_grad(set_to_none=True)
            logits = model(inputs)
            per_example = loss_fn(logits, labels)
            per_example.mean().backward()
            torch.nn.utils.clip_grad_value_(params, CLIP)
            optimizer.step()
            with torch.no_grad():
                total += per_example.sum()
                correct += (logits.argmax(1) == labels).sum()
        float(total / rows), float(correct / rows)

    seconds = timed_calls(epoch, repeats)
    return summary(seconds[1:], seconds[0], threads=threads, torch=torch.__version__)


SCENARIOS = {
    "keras_default": ("(a) Keras `model.fit`, default compile", keras_default),
    "keras_spe100": ("(b) Keras `model.fit`, `steps_per_execution=100`", keras_spe100),
    "project_per_call": ("(c) `training.fit`, one call per epoch (epochs=1)", project_per_call),
    "project_one_call": ("(c′) `training.fit`, one call of all epochs", project_one_call),
    "torch": ("(d) plain PyTorch loop", torch_loop),
    "torch1": ("(d′) plain PyTorch loop, 1 thread", lambda r, n: torch_loop(r, n, 1)),
    "freeze4": ("freeze hidden1-4, fit on pixels", lambda r, n: freeze(r, n, 4)),
    "cache4": ("cache hidden4 outputs, fit upper on features", lambda r, n: cache(r, n, 4)),
    "freeze2": ("freeze hidden1-2, fit on pixels", lambda r, n: freeze(r, n, 2)),
    "cache2": ("cache hidden2 outputs, fit upper on features", lambda r, n: cache(r, n, 2)),
}


def run_child(name: str, rows: int, repeats: int) -> None:
    result = SCENARIOS[name][1](rows, repeats)
    result["peak_mib"] = peak_mib()
    print(RESULT + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- parent: run, tabulate, write


def machine_busy_seconds() -> float:
    """CPU seconds all processes (and the hypervisor's steal) have used since boot, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds used by this process and its finished children (the scenario processes)."""
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def spawn(name: str, rows: int, repeats: int, timeout: float) -> dict:
    """Run one scenario in a fresh process; `other` = cores' worth of CPU that other processes used meanwhile."""
    command = [sys.executable, "-m", "bench.training_speed", "--scenario", name, "--rows", str(rows), "--repeats", str(repeats)]
    busy, own, start = machine_busy_seconds(), own_seconds(), time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    other = max(0.0, (machine_busy_seconds() - busy) - (own_seconds() - own)) / wall
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"status": f"failed (rc {done.returncode}): {tail[0][:120]}", "other": other}
    result = json.loads(lines[-1][len(RESULT):])
    result.update(other=other, own=(own_seconds() - own) / wall, process_seconds=wall)
    return result


def merge(runs: list[dict]) -> dict:
    """One scenario's rounds as one result: timed epochs pooled, other numbers the median over rounds."""
    ok = [r for r in runs if "median" in r]
    if not ok:
        return runs[-1]
    merged = dict(ok[0])
    for key, value in ok[0].items():
        if isinstance(value, float):  # counts (threads, tensors, features) are the same every round
            merged[key] = statistics.median(r[key] for r in ok)
    pooled = [e for r in ok for e in r["epochs"]]
    merged.update(summary(pooled, merged["warmup"]))
    merged.update(peak_mib=max(r["peak_mib"] for r in ok), other_max=max(r["other"] for r in ok))
    merged.update(round_medians=[r["median"] for r in ok], rounds_failed=len(runs) - len(ok))
    return merged


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass

    def version(*packages: str) -> str:
        for package in packages:
            try:
                return metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
        return "not installed"

    return {
        "nproc": str(os.cpu_count()),
        "cores available (affinity)": str(len(os.sched_getaffinity(0))),
        "CPU": cpu,
        "Python": platform.python_version(),
        "TensorFlow": version("tensorflow", "tensorflow-cpu", "tensorflow-intel"),
        "Keras": version("keras"),
        "PyTorch": version("torch"),
        "NumPy": version("numpy"),
    }


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(results: dict[str, dict], args: argparse.Namespace, command: str, started: str, total: float) -> str:
    lines = [
        "# Training speed: DNN5 (784-300-50-50-50-50-5, ReLU, softmax)",
        "",
        f"Command: `{command}`  ",
        f"Date: {started}  ",
        f"Rows: {args.rows:,} random float32 pixels in [0, 1), random labels 0..4; batch {BATCH}; "
        f"SGD lr {LR}, clipvalue {CLIP}; per scenario process one warm-up epoch, then {args.repeats} timed "
        f"epochs; {args.rounds} interleaved round(s), so each median is over {args.repeats * args.rounds} epochs.  ",
        f"Whole benchmark: {total:.0f} s wall. Each scenario runs in its own process; `own cores` is the CPU "
        "it used per wall second (start-up included), `other cores` what every other process on the machine "
        "used meanwhile (from /proc/stat, steal included) — the noise indicator on a shared machine.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine_facts().items()) + ".",
        "",
        "## Seconds per epoch",
        "",
        "| scenario | s/epoch (median) | min–max | round medians | warm-up epoch s | peak RSS MiB | own cores | other cores (max) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, (label, _) in SCENARIOS.items():
        r = results.get(name, {"status": "not run"})
        if "median" not in r:
            lines.append(f"| {label} | {r['status']} | | | | | | {fmt(r.get('other'), 2)} | |")
            continue
        notes = []
        if "jit_compile" in r:
            notes.append(f"jit_compile={r['jit_compile']}")
        if "reported_median" in r:
            notes.append(f"wall per fit() call; History.seconds says {r['reported_median']:.3f} (warm-up {r['reported_warmup']:.3f})")
        if "call_wall" in r:
            notes.append(f"History.seconds; whole fit() call {r['call_wall']:.2f} s")
        if "threads" in r:
            notes.append(f"torch {r['torch']}, set_num_threads({r['threads']})")
        if "cache_seconds" in r:
            notes.append(f"{r['features']} cached features; caching {r['cache_seconds']:.2f} s (again: {r['cache_again']:.2f} s)")
        if "trainable" in r:
            notes.append(f"{r['trainable']} trainable tensors")
        if r["rounds_failed"]:
            notes.append(f"{r['rounds_failed']} round(s) failed")
        rounds = " / ".join(f"{m:.3f}" for m in r["round_medians"])
        lines.append(
            f"| {label} | {fmt(r['median'])} | {fmt(r['min'])}–{fmt(r['max'])} | {rounds} | {fmt(r['warmup'], 2)} "
            f"| {r['peak_mib']:.0f} | {r['own']:.2f} | {r['other_max']:.2f} | {'; '.join(notes)} |"
        )
    lines += ["", "## `freeze` vs `cache` (same network, same batches; `training.fit`)", ""]
    lines += [
        "| frozen | freeze s/epoch | cache s/epoch | freeze/cache | caching one-off s | break-even epochs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for frozen in (4, 2):
        f, c = results.get(f"freeze{frozen}", {}), results.get(f"cache{frozen}", {})
        if "median" in f and "median" in c:
            saved = f["median"] - c["median"]
            even = f"{c['cache_seconds'] / saved:.1f}" if saved > 0 else "never"
            lines.append(
                f"| hidden1-{frozen} | {fmt(f['median'])} | {fmt(c['median'])} | {f['median'] / c['median']:.1f}× "
                f"| {fmt(c['cache_seconds'], 2)} | {even} |"
            )
        else:
            lines.append(f"| hidden1-{frozen} | {f.get('status', '–')} | {c.get('status', '–')} | | | |")
    lines += [
        "",
        "Break-even epochs = caching time / (freeze − cache seconds per epoch): after that many epochs `cache` "
        "has paid for its one forward pass. Peak RSS is each scenario's own process (`ru_maxrss`), including "
        "TensorFlow/PyTorch start-up and the ~180 MiB input array (plus the framework's copy of it).",
        "",
        "## Conclusions (generated from the numbers above)",
        "",
        *[f"- {sentence}" for sentence in conclusions(results, args.rows)],
        "",
    ]
    return "\n".join(lines)


DESIGN_TORCH = 0.66  # DESIGN.md "Speed": a plain PyTorch loop, s/epoch on this kind of machine


def conclusions(results: dict[str, dict], rows: int) -> list[str]:
    med = {name: r["median"] for name, r in results.items() if "median" in r}
    steps = -(-rows // BATCH)
    out = []
    if {"keras_default", "keras_spe100"} <= med.keys():
        a, b = med["keras_default"], med["keras_spe100"]
        out.append(
            f"Per-step overhead matters: default Keras `fit` takes {a:.3f} s/epoch, `steps_per_execution=100` "
            f"{b:.3f} s ({a / b:.2f}×), i.e. about {1000 * (a - b) / steps:.2f} ms of overhead per step of {steps}."
        )
    if "project_one_call" in med:
        c = med["project_one_call"]
        parts = [f"`training.fit` (one call, many epochs) takes {c:.3f} s/epoch"]
        if "keras_spe100" in med:
            parts.append(f"{c / med['keras_spe100']:.2f}× Keras with `steps_per_execution=100`")
        if "torch" in med:
            parts.append(f"{c / med['torch']:.2f}× the PyTorch loop measured here ({med['torch']:.3f} s)")
        parts.append(f"{c / DESIGN_TORCH:.2f}× DESIGN.md's PyTorch figure of {DESIGN_TORCH} s")
        best = min(DESIGN_TORCH, med.get("torch", DESIGN_TORCH), med.get("torch1", DESIGN_TORCH))
        verdict = "at parity with (or faster than)" if c <= 1.10 * best else "more than 10 % slower than"
        out.append(", ".join(parts) + f": {verdict} the best PyTorch figure ({best:.3f} s).")
    if {"project_per_call", "project_one_call"} <= med.keys():
        r = results["project_per_call"]
        out.append(
            f"Calling `training.fit(epochs=1)` once per epoch costs {med['project_per_call']:.3f} s wall per epoch "
            f"against {med['project_one_call']:.3f} s inside one call: each call builds a new optimizer and a new "
            f"`tf.function` (traced again) and copies the inputs into tensors; its own History.seconds says "
            f"{r['reported_median']:.3f} s."
        )
    if {"torch", "torch1"} <= med.keys():
        two, one = med["torch"], med["torch1"]
        if two > 1.5 * one:
            how = "the multi-threaded pool stalls when another process holds a core (see the round medians)"
        elif two < one / 1.2:
            how = "the extra threads pay"
        else:
            how = "extra threads buy little at batch 200"
        out.append(
            f"PyTorch with {results['torch']['threads']} threads: {two:.3f} s/epoch; with 1 thread: {one:.3f} s "
            f"({two / one:.2f}×): {how}."
        )
    elif "torch" not in med:
        out.append("PyTorch is not installed here, so there is no measured PyTorch figure to compare with.")
    for frozen in (4, 2):
        f, c = results.get(f"freeze{frozen}", {}), results.get(f"cache{frozen}", {})
        if "median" in f and "median" in c:
            saved = f["median"] - c["median"]
            out.append(
                f"hidden1-{frozen} frozen: `cache` trains {f['median'] / c['median']:.1f}× faster per epoch than `freeze` "
                f"({c['median']:.3f} vs {f['median']:.3f} s) after a one-off {c['cache_seconds']:.2f} s forward pass, "
                + (f"repaid after {c['cache_seconds'] / saved:.1f} epoch(s)." if saved > 0 else "which is never repaid.")
            )
    worst = max((r.get("other_max", 0.0) for r in results.values()), default=0.0)
    out.append(
        f"Noise: other processes used up to {worst:.2f} of the 2 cores during a scenario"
        + ("; figures under such load can be 10–40 % slow, compare round medians before trusting small differences." if worst > 0.25 else "; the run was essentially quiet.")
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs after one warm-up epoch")
    parser.add_argument("--out", type=Path, default=Path("bench/training_speed.md"))
    parser.add_argument("--rounds", type=int, default=2, help="times the scenario list is run, interleaved")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per scenario process")
    parser.add_argument("--scenario", choices=list(SCENARIOS), help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.rows < BATCH or args.repeats < 1 or args.rounds < 1:
        parser.error("--rows must be >= the batch size, --repeats and --rounds >= 1")
    if args.scenario:
        run_child(args.scenario, args.rows, args.repeats)
        return 0
    command = "python -m bench.training_speed " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    begin = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    for round_ in range(1, args.rounds + 1):
        for name in args.only or SCENARIOS:
            r = spawn(name, args.rows, args.repeats, args.timeout)
            runs.setdefault(name, []).append(r)
            shown = f"{r['median']:.3f} s/epoch, other cores {r['other']:.2f}" if "median" in r else r["status"]
            print(f"round {round_} {name}: {shown}", file=sys.stderr, flush=True)
    results = {name: merge(r) for name, r in runs.items()}
    table = render(results, args, command.strip(), started, time.perf_counter() - begin)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
