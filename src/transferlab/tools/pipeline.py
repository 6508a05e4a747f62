"""What `dvc.yaml` must spell out because DVC cannot derive it from params.yaml.

DVC templates a dependency from one value, never a list from a list, so the label-budget sweep's
stage names each variant it runs (`variants.<name>` in its params) and each of their init models
(in its deps) by hand. `check_label_budget_stage` compares that hand-written list with
`sweeps.label_budget.variants`: the sweep stage calls it before training and tests/test_deps.py
on the committed files, so a sweep can never run a variant whose edits would not rerun it.

A sweep stage also lists the metrics files and run records of the `transfer@<variant>` stages whose race one of its
points is (`sweeps.twin_metrics`): DVC then runs those first and reruns the sweep when they change,
and the sweep reads their repetitions instead of racing them again. A twin left out only costs
time (the sweep races it itself and says so); tests/test_deps.py keeps the committed list exact.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from transferlab import paths
from transferlab.config import Params
from transferlab.errors import TransferlabError

DVC_YAML = Path("dvc.yaml")
LABEL_BUDGET_STAGE = "sweep_label_budget"


class PipelineError(TransferlabError):
    """dvc.yaml declares other dependencies than the params need; the message says what to add or remove."""


def label_budget_needs(params: Params) -> tuple[list[str], list[str]]:
    """(params keys, model files) the label-budget sweep reads beyond its fixed ones: its variants and their init models."""
    names = params.sweeps.label_budget.variants if params.sweeps.label_budget is not None else []
    models = dict.fromkeys(paths.init_model(params.variants[name].init_from).as_posix() for name in names)
    return [f"variants.{name}" for name in names], list(models)


def stage_deps(stage: str, dvc_yaml: Path = DVC_YAML) -> set[str]:
    """The deps dvc.yaml lists for `stage` as written (empty outside a DVC project or for an unknown stage)."""
    if not dvc_yaml.is_file():
        return set()
    with dvc_yaml.open() as handle:
        spec = yaml.safe_load(handle) or {}
    return {entry for entry in (spec.get("stages", {}).get(stage) or {}).get("deps", []) if isinstance(entry, str)}


def _declared(stage: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The stage's `variants.*` params and `models/*.keras` deps, as written in dvc.yaml."""
    params = {entry for entry in stage.get("params", []) if isinstance(entry, str) and entry.startswith("variants")}
    models = {entry for entry in stage.get("deps", []) if entry.startswith(f"{paths.MODELS.as_posix()}/")}
    return params, models


def label_budget_mismatch(spec: Mapping[str, Any], params: Params) -> str | None:
    """One line saying how `dvc.yaml`'s label-budget stage must change to match the params, or None when it matches."""
    stage = spec.get("stages", {}).get(LABEL_BUDGET_STAGE)
    if stage is None:
        return None if params.sweeps.label_budget is None else f"dvc.yaml: stage {LABEL_BUDGET_STAGE} is missing"
    need_params, need_models = label_budget_needs(params)
    have_params, have_models = _declared(stage)
    changes = [f"add `- {key}` to its params" for key in need_params if key not in have_params]
    changes += [f"add `- {path}` to its deps" for path in need_models if path not in have_models]
    changes += [f"remove `- {key}` from its params" for key in sorted(have_params - set(need_params))]
    changes += [f"remove `- {path}` from its deps" for path in sorted(have_models - set(need_models))]
    if not changes:
        return None
    return (f"dvc.yaml: stage {LABEL_BUDGET_STAGE}: {'; '.join(changes)}"
            " (it must name exactly the variants of sweeps.label_budget.variants and their init models)")


def check_label_budget_stage(params: Params, dvc_yaml: Path = DVC_YAML) -> None:
    """Refuse to run the sweep when dvc.yaml would not rerun it for an edit of a variant it runs.

    Outside a DVC project (no dvc.yaml: the stage run by hand in a scratch folder) there is nothing to check.
    """
    if not dvc_yaml.is_file():
        return
    with dvc_yaml.open() as handle:
        spec = yaml.safe_load(handle)
    if (problem := label_budget_mismatch(spec, params)) is not None:
        raise PipelineError(problem)
