"""`verify` on another platform holds a rebuild to the committed run's intervals: every test set's, and every sweep row's."""
from __future__ import annotations

import json

from transferlab.tools.crosscheck import compare_means


def test_every_test_sets_mean_is_held_to_its_committed_interval_whatever_the_set_is_called() -> None:
    committed = json.dumps({"target_accuracy": 0.80, "target_accuracy_ci95": [0.78, 0.82],
                            "shift_accuracy": 0.60, "shift_accuracy_ci95": [0.58, 0.62],
                            "erased_accuracy": 0.50, "erased_accuracy_ci95": [0.48, 0.52],
                            "note_accuracy_ci95": [None, None]})  # an interval the run could not state: not compared
    inside = json.dumps({"target_accuracy": 0.81, "shift_accuracy": 0.59, "erased_accuracy": 0.51})
    assert compare_means("metrics/transfer/v.json", committed, inside) == (3, [])
    outside = json.dumps({"target_accuracy": 0.81, "shift_accuracy": 0.59, "erased_accuracy": 0.47})
    compared, differences = compare_means("metrics/transfer/v.json", committed, outside)
    assert compared == 3 and [(d.file, d.key) for d in differences] == [("metrics/transfer/v.json", "erased_accuracy")]
    missing = json.dumps({"target_accuracy": 0.81, "shift_accuracy": 0.59})
    assert [d.rebuilt for d in compare_means("metrics/transfer/v.json", committed, missing)[1]] == ["(missing)"]


def test_a_sweep_rows_mean_is_held_to_its_rows_interval() -> None:
    committed = "x,series,target_accuracy,ci95_low,ci95_high\n0,frozen,0.80,0.78,0.82\n2,frozen,0.70,,\n"
    rebuilt = "x,series,target_accuracy,ci95_low,ci95_high\n0,frozen,0.85,0.83,0.87\n2,frozen,0.10,,\n"
    compared, differences = compare_means("metrics/sweeps/t.csv", committed, rebuilt)
    assert compared == 1 and [d.key for d in differences] == ["row 1 (x 0, series frozen).target_accuracy"]
