"""Every file the pipeline reads or writes, in one place (dvc.yaml spells the same names)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

PARAMS = Path("params.yaml")
PIPELINES = (Path("dvc.yaml"), Path("inputs/dvc.yaml"), Path("variants/dvc.yaml"))  # docs/architecture.md: why three
RAW_DATA = Path("data/raw")  # the user's data files: a dependency DVC hashes, so nothing in it may block or lead out
PREPARED = Path("data/prepared")
PARAMS_OK = PREPARED / "params_ok.json"  # written by the validate stage, a dependency of every other stage
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
RUNS = Path("runs")  # what each stage ran and its MLflow run (configuration, ids, registry version): metrics/ holds results only
REPORTS = Path("reports")
CONCLUSIONS = REPORTS / "conclusions.json"  # every verdict and the advice, with the platform that computed them


def source_data(source: str) -> Path:
    """A source task's training and test sets (`sources.<source>`)."""
    return PREPARED / "sources" / f"{source}.npz"


def target_data(target: str) -> Path:
    return PREPARED / f"target_{target}.npz"


def init_model(name: str) -> Path:
    """A model variants can start from: a source, a pretraining method, or a zoo entry."""
    return MODELS / f"{name}.keras"


def init_metrics(name: str) -> Path:
    return METRICS / f"{name}.json"


def init_run(name: str) -> Path:
    return RUNS / f"{name}.json"


def init_history(name: str) -> Path:
    return PLOTS / f"{name}.csv"


def variant_model(variant: str) -> Path:
    return MODELS / "transfer" / f"{variant}.keras"


def variant_metrics(variant: str) -> Path:
    return METRICS / "transfer" / f"{variant}.json"


def variant_run(variant: str) -> Path:
    """The variant's record: its recipe, budget and choices, and its MLflow run (results are in `variant_metrics`)."""
    return RUNS / "transfer" / f"{variant}.json"


def variant_history(variant: str) -> Path:
    return PLOTS / "transfer" / f"{variant}.csv"


def sweep_rows(sweep: str) -> Path:
    """Tidy rows, one per training run of the sweep."""
    return METRICS / "sweeps" / f"{sweep}.csv"


def sweep_summary(sweep: str) -> Path:
    """One row per (x, series): mean accuracy and its 95% interval."""
    return PLOTS / "sweeps" / f"{sweep}.csv"


def sweep_metrics(sweep: str) -> Path:
    return METRICS / "sweeps" / f"{sweep}.json"


def target_run(target: str) -> Path:
    """What `prepare_target@<target>` made: sizes, classes and how its images were prepared (resize, channels)."""
    return RUNS / "targets" / f"{target}.json"


def sweep_run(sweep: str) -> Path:
    """The sweep's record: its target, budget, skipped points and MLflow run."""
    return RUNS / "sweeps" / f"{sweep}.json"


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def file_kind(path: Path) -> str | None:
    """None for a regular file (symlinks followed), else what it is: reading a FIFO blocks, a device never ends."""
    mode = os.stat(path).st_mode
    return None if stat.S_ISREG(mode) else _KINDS.get(stat.S_IFMT(mode), "not a file")
