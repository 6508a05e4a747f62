"""The README quotes the report's first section, generated, never typed: `python -m transferlab.tools.readme`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from transferlab.errors import DataError
from transferlab.tools import readme

ROOT = Path(__file__).resolve().parents[1]
REPORT = "# t\n\nheader\n\n## The answer\n\n**Use:** scratch.\n\n![gain](figures/gain_over_scratch_mnist.png)\n\n## Protocol\n\nmore\n"


def test_the_answer_section_is_cut_at_the_next_heading_and_its_figures_point_into_reports() -> None:
    assert readme.answer_section(REPORT) == "**Use:** scratch.\n\n![gain](reports/figures/gain_over_scratch_mnist.png)"
    with pytest.raises(DataError, match="no '## The answer' section"):
        readme.answer_section("# t\n\n## Protocol\n")


def test_the_block_between_the_markers_is_replaced_and_nothing_else() -> None:
    text = f"intro\n{readme.START}\nold numbers\n{readme.END}\nrest\n"
    assert readme.with_block(text, "new") == f"intro\n{readme.START}\nnew\n{readme.END}\nrest\n"
    with pytest.raises(DataError, match="markers of the generated results block are missing"):
        readme.with_block("no markers", "new")


def test_the_committed_readme_quotes_the_committed_report() -> None:
    result = subprocess.run([sys.executable, "-m", "transferlab.tools.readme", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024  # a front door; the rest lives in docs/
