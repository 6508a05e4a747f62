"""What the model zoo holds: every registered version of the MLflow Model Registry, as rows and as a table.

    python -m transferlab.tracking.registry list   # the catalogue, from $MLFLOW_TRACKING_URI or sqlite:///mlflow.db

(also `transferlab-zoo list`). Registering and fetching are `registry.py`; the rows come from the tags it
gives each version (`input_shape`, `hidden_layers` of a Dense stack or `blocks` of any other network,
`test_accuracy`). A network's blocks are listed under the table, one line per version.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from transferlab.errors import ModelError
from transferlab.errors import first_line as _first_line


def _tracking_uri() -> str:
    from transferlab.tracking import tracking_uri  # the one default store, stated once

    return tracking_uri()


def model_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of a registered model, oldest first (following MLflow's pages)."""
    quoted = f'"{name}"' if "'" in name else f"'{name}'"
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name={quoted}", page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda version: int(version.version))


def _hidden(tag: str | None) -> dict[str, int]:
    """`hidden1:300,hidden2:50` -> {"hidden1": 300, "hidden2": 50}; malformed parts are skipped."""
    pairs = (part.partition(":") for part in (tag or "").split(",") if part)
    return {name: int(units) for name, _, units in pairs if units.isdigit()}


def _blocks(tag: str | None) -> list[tuple[str, int]]:
    """`conv2d_1..activation_1:104,…` -> [("conv2d_1..activation_1", 104), …]; malformed parts are skipped."""
    pairs = (part.rpartition(":") for part in (tag or "").split(",") if part)
    return [(span, int(count)) for span, _, count in pairs if span and count.isdigit()]


def _float(tag: str | None) -> float | None:
    try:
        return float(tag) if tag is not None else None
    except ValueError:
        return None


def catalogue(tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """One row per registered version: name, version, aliases, input_shape, hidden_layers, blocks, test_accuracy, run_id."""
    client = MlflowClient(tracking_uri=tracking_uri)
    rows, token = [], None
    while True:
        page = client.search_registered_models(page_token=token)
        for model in page:
            # search results leave aliases out in some stores; the model's own record has them
            aliases = client.get_registered_model(model.name).aliases
            for version in model_versions(client, model.name):
                shape = version.tags.get("input_shape", "")
                rows.append({
                    "name": model.name,
                    "version": str(version.version),
                    "aliases": sorted(alias for alias, number in aliases.items() if str(number) == str(version.version)),
                    "input_shape": tuple(int(d) for d in shape.split(",") if d.isdigit()) or None,
                    "hidden_layers": _hidden(version.tags.get("hidden_layers")),
                    "blocks": _blocks(version.tags.get("blocks")),
                    "test_accuracy": _float(version.tags.get("test_accuracy")),
                    "run_id": version.run_id,
                })
        token = page.token
        if not token:
            return sorted(rows, key=lambda row: (row["name"], int(row["version"])))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The catalogue as a fixed-width text table; then each network's blocks (lowest first, the head last)."""
    header = ("name", "version", "aliases", "input", "hidden units", "test_accuracy")
    lines = [header] + [
        (
            row["name"],
            row["version"],
            ",".join(row["aliases"]) or "-",
            "x".join(str(d) for d in row["input_shape"] or ()) or "?",
            "-".join(str(units) for units in row["hidden_layers"].values())
            or (f"{len(row['blocks'])} blocks" if row.get("blocks") else "?"),
            "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    listed = [f"{row['name']} {row['version']} blocks: " + ", ".join(f"{number} {span} ({count:,} parameters)"
                                                                      for number, (span, count) in enumerate(row["blocks"], 1))
              for row in rows if row.get("blocks")]
    return "\n".join(table + ([""] + listed if listed else []))


def _list(uri: str) -> None:
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(path).exists():  # don't create an empty store just to list it
        print(f"no registry yet ({path} does not exist)")
        return
    try:
        rows = catalogue(uri)
    except MlflowException as error:
        raise ModelError(f"{uri}: registry error ({_first_line(error)})") from None
    print(format_table(rows) if rows else f"no registered models in {uri}")


def main(argv: list[str] | None = None) -> None:
    """`python -m transferlab.tracking.registry list` (also installed as `transferlab-zoo list`)."""
    from transferlab.launch.cli import run_main

    def command(args: list[str]) -> None:
        parser = argparse.ArgumentParser(prog="python -m transferlab.tracking.registry", description=__doc__.splitlines()[0])
        parser.add_argument("command", choices=["list"], help="list: every registered model version")
        parser.parse_args(args)
        _list(_tracking_uri())

    run_main(command, argv)
