"""The layer check (`python -m transferlab.tools.layers`): the package follows its order, and a breach is caught."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from transferlab.tools import layers


def test_the_package_follows_the_layer_order(capsys: pytest.CaptureFixture) -> None:
    assert layers.main([str(ROOT / "src" / "transferlab")]) == 0
    out = capsys.readouterr().out
    assert "training imports (root), config, data, models" in out  # what each folder uses, printed


def test_an_import_against_the_order_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    package = tmp_path / "transferlab"
    for folder, source in {
        "data": "from transferlab.training import race\n",  # data below training
        "report": "import tensorflow as tf\n",  # the report starts without TensorFlow
        "training": "import keras\nfrom transferlab import data\n",  # allowed both
    }.items():
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
        (package / folder / "module.py").write_text(source)
    assert layers.main([str(package)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["transferlab/data/module.py:1: imports transferlab.training.race (training is above data)",
                   "transferlab/report/module.py:1: imports tensorflow at module level (only models, training may)"]


def test_no_module_is_over_300_lines() -> None:
    """A module that grows past 300 lines is split by what it holds (docs/architecture.md)."""
    long = {str(path.relative_to(ROOT)): n for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py")])
            if (n := len(path.read_text().splitlines())) > 300}
    assert not long, long
