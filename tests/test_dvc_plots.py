"""`dvc plots show` on the committed run: a page that renders offline, plots that say what they show."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import ROOT

VENDOR = ROOT / "vendor" / "vega"


def dvc(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


class Resources(HTMLParser):
    """Every address the page would load: `src` of any element, `href` of `<link>`."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("src"):
            self.loaded.append(found["src"])
        elif tag == "link" and found.get("href"):
            self.loaded.append(found["href"])
        elif tag == "script":
            self.inline_scripts += 1


@pytest.fixture(scope="module")
def plots() -> dict[str, list[dict]]:
    return json.loads(dvc("plots", "show", "--json"))["data"]


def test_plots_page_loads_nothing_from_the_network(tmp_path: Path) -> None:
    dvc("plots", "show", "-o", str(tmp_path / "page"))
    page = (tmp_path / "page" / "index.html").read_text()
    parser = Resources()
    parser.feed(page)
    assert not [address for address in parser.loaded if re.match(r"(https?:)?//", address)], parser.loaded
    assert "cdn.jsdelivr.net" not in page and "vegaEmbed(" in page and parser.inline_scripts > 3


def test_vendored_libraries_carry_their_licences() -> None:
    template = (VENDOR / "dvc_plots.html").read_text()
    named = re.findall(r"<!-- (\S+) (\S+), (\S+) \(LICENSE\.(\S+)\) -->", template)
    assert [entry[0] for entry in named] == ["vega", "vega-lite", "vega-embed"]
    for name, _, licence, file in named:
        assert licence == "BSD-3-Clause" and "Redistribution and use" in (VENDOR / f"LICENSE.{file}").read_text(), name


def test_every_plot_has_a_title_and_named_axes(plots: dict[str, list[dict]]) -> None:
    assert plots
    for path, views in plots.items():
        for view in views:
            content = view["content"]
            encoding = content.get("encoding") or content.get("spec", {}).get("encoding", {})
            assert content.get("title"), path
            assert encoding["x"].get("title") not in (None, "", "x"), path


def accuracy_scale(content: dict) -> dict:
    """The y scale of a plain, a faceted (`spec`) or a layered (`layer`: the band first) view."""
    for encoding in (content.get("encoding"), content.get("spec", {}).get("encoding"), *(layer["encoding"] for layer in content.get("layer", []))):
        if encoding and "y" in encoding:
            return encoding["y"].get("scale", {})
    raise AssertionError(f"no y encoding in {content.get('title')}")


def test_accuracy_plots_share_one_y_scale(plots: dict[str, list[dict]]) -> None:
    """Per-variant curves, the sweeps and the overlay compare on one scale (0 to 100 %), not one each."""
    accuracy = [path for path in plots if path.startswith(("plots/transfer/", "plots/sweeps/", "metrics/sweeps/", "reports/"))]
    assert len(accuracy) > 4
    assert {json.dumps(accuracy_scale(view["content"])) for path in accuracy for view in plots[path]} == {'{"domain": [0, 1]}'}
