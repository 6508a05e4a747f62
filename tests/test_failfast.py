"""Fail fast, never record a lie (issue 15): bad params, bad files and faults each end in one line.

Every probe asserts: a non-zero exit, one `error:` line naming the key, file or address, no
traceback. Most params and file cases run the stage's `main` in-process through `run_main` (no
TensorFlow, milliseconds); a few go through real `dvc repro` in a temp git repo and also assert
that `dvc.lock` and the outputs are unchanged; the faults run real processes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import (
    INPUTS,
    address,
    addresses,
    assert_process_ends,
    make_project,
    run,
    stage_env,
    tiny_params,
)

from transferlab.launch.cli import EXIT_BAD_INPUT, run_main

DVC = [sys.executable, "-m", "dvc"]


def assert_one_line(stderr: str, *fragments: str) -> str:
    """The last stderr line is the error, naming what is wrong; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def call_main(main: Callable[[list[str]], None], argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run a stage's main in-process as `python -m` would; returns its one error line."""
    with pytest.raises(SystemExit) as stopped:
        run_main(main, argv)
    assert stopped.value.code == EXIT_BAD_INPUT
    return capsys.readouterr().err


# ---------------------------------------------------------------- params cases (validate stage, in-process)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        *parents, last = path.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return change


def _rename(section: str, old: str, new: str) -> Callable[[dict], None]:
    def change(params: dict) -> None:
        params[section][new] = params[section].pop(old)
        for variant in params["variants"].values():  # keep references consistent: only the name is wrong
            for key in ("target", "init_from"):
                if variant.get(key) == old:
                    variant[key] = new
        if section == "variants":
            params["sweeps"]["label_budget"]["variants"] = [v for v in params["sweeps"]["label_budget"]["variants"] if v != old]

    return change


RANKING = {"method": "auxiliary_ranking", "target": "mnist", "hidden_units": [16],
           "train": {"epochs": 1, "batch_size": 16}, "corruptions": [{"kind": "noise", "amount": 0.5}]}

# (id, change to TINY or raw YAML text replacement, fragments the one line must hold)
PARAMS_CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    # from the issue
    ("seed_sexagesimal", ("seed: 3", "seed: 1:30"), ("params.yaml: transfer.seed",)),
    ("epochs_true", _set("transfer.epochs", True), ("params.yaml: transfer.epochs",)),
    ("source_epochs_true", _set("sources.source.train.epochs", True), ("sources.source.train.epochs",)),
    ("learning_rate_inf", _set("transfer.grid", [{"learning_rate": float("inf")}]), ("transfer.grid.0.learning_rate", "finite")),
    ("clip_value_nan", _set("transfer.grid", [{"clip_value": float("nan")}]), ("transfer.grid.0.clip_value", "finite")),
    ("margin_inf", _set("pretrain.rank", {**RANKING, "margin": float("inf")}), ("pretrain.rank.margin", "finite")),
    ("image_size_huge", _set("targets.mnist.image_size", 100000), ("targets.mnist.image_size",)),
    ("model_prefix_bad", _set("mlflow.model_prefix", "bad name/"), ("mlflow.model_prefix",)),
    ("experiment_empty", _set("mlflow.experiment", ""), ("mlflow.experiment",)),
    ("section_misspelt", lambda p: p.update(variantz=p["variants"]), ("params.yaml: variantz: unknown key",)),
    ("unknown_init_from", _set("variants.freeze2.init_from", "nosuch"), ("variants.freeze2.init_from", "'nosuch'")),
    ("unknown_target", _set("variants.freeze2.target", "nosuch"), ("variants.freeze2.target", "'nosuch'")),
    ("variant_name_path", _rename("variants", "freeze2", "../../../../escaped"), ("variants.../../../../escaped", "not a plain name")),
    ("target_name_path", _rename("targets", "mnist", "a/b"), ("targets.a/b", "not a plain name")),
    ("pretrain_name_path", _set("pretrain", {"../up": RANKING}), ("pretrain.../up", "not a plain name")),
    ("zoo_name_space", _set("zoo", {"my model": {"kind": "registry", "uri": "models:/x/1"}}), ("zoo.my model", "not a plain name")),
    ("model_file_missing", _set("model_files", {"theirs": {"format": "npz", "path": "nothere.npz"}}), ("model_files.theirs.path", "nothere.npz")),
    # our own
    ("variant_epochs_true", _set("variants.scratch.epochs", True), ("variants.scratch.epochs",)),
    ("seeds_float", _set("transfer.seeds", 2.0), ("transfer.seeds",)),
    ("resample_yes", ("seeds: 1", "seeds: 1\n  resample_labels: yes"), ("transfer.resample_labels",)),
    ("test_fraction_true", _set("sources.source.data.test_fraction", True), ("sources.source.data.test_fraction",)),
    ("momentum_nan", _set("transfer.grid", [{"name": "momentum", "momentum": float("nan")}]), ("transfer.grid.0.momentum",)),
    ("corruption_amount_nan", _set("pretrain.rank", {**RANKING, "corruptions": [{"kind": "noise", "amount": float("nan")}]}),
     ("pretrain.rank.corruptions.0.amount",)),
    ("sweep_layer_true", _set("sweeps.transferability.layers", [0, True]), ("sweeps.transferability.layers.1",)),
    ("class_true", _set("sources.source.data.classes", [True, 2]), ("sources.source.data.classes.0",)),
    ("duplicate_key", ("seed: 3", "seed: 3\n  seed: 4"), ("params.yaml: (file)", "duplicate")),
    ("not_a_mapping", lambda p: p.clear(), ("(top level)",)),
    ("experiment_blank", _set("mlflow.experiment", "  "), ("mlflow.experiment",)),
    ("data_outside_raw", _set("sources.source.data", {"dataset": "mnist_npz", "path": "/etc/passwd"}), ("sources.source.data.path", "outside data/raw")),
    ("data_missing", _set("sources.source.data", {"dataset": "mnist_npz", "path": "data/raw/mnist.npz"}), ("sources.source.data.path", "no such file")),
    ("target_data_missing", _set("targets.digits", {"dataset": "mnist_idx", "path": "data/raw/idx", "classes": [1, 2]}),
     ("targets.digits.path", "no such file")),
]


def write_params(workdir: Path, change: Any) -> None:
    params = tiny_params()
    if callable(change):
        change(params)
    text = yaml.safe_dump(params, sort_keys=False) if params else "- just a list\n"
    if isinstance(change, tuple):  # raw YAML: what PyYAML and DVC read differently
        old, new = change
        assert old in text
        text = text.replace(old, new, 1)
    (workdir / "params.yaml").write_text(text)


@pytest.mark.parametrize("change, fragments", [case[1:] for case in PARAMS_CASES], ids=[case[0] for case in PARAMS_CASES])
def test_bad_params_one_line(workdir: Path, capsys: pytest.CaptureFixture, change: Any, fragments: tuple[str, ...]) -> None:
    from stages import validate

    write_params(workdir, change)
    assert_one_line(call_main(validate.main, [], capsys), *fragments)
    assert not (workdir / "data/prepared/params_ok.json").exists()


def test_valid_params_pass_validate(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    from stages import validate

    run_main(validate.main, [])
    first = (workdir / "data/prepared/params_ok.json").read_bytes()
    run_main(validate.main, [])
    assert (workdir / "data/prepared/params_ok.json").read_bytes() == first  # constant: reruns nothing below


def test_params_read_as_dvc_reads_them(workdir: Path) -> None:
    """`seed: 010` is 10 for DVC (YAML 1.2); PyYAML said 8. The stages now read what dvc.lock records."""
    from dvc.utils.serialize import load_yaml

    from transferlab.config import load_params

    text = (workdir / "params.yaml").read_text().replace("seed: 3", "seed: 010", 1)
    (workdir / "params.yaml").write_text(text + "\n")
    assert yaml.safe_load(text)["transfer"]["seed"] == 8, "the PyYAML reading this fixes"
    assert load_yaml("params.yaml")["transfer"]["seed"] == 10
    assert load_params("params.yaml").transfer.seed == 10


def _npz_model(path: Path, depth: int, dtype: Any = np.float32) -> None:
    arrays = {}
    for i in range(1, depth + 1):
        arrays[f"fc{i}/kernel"] = np.zeros((784 if i == 1 else 4, 4), dtype=dtype)
        arrays[f"fc{i}/bias"] = np.zeros(4, dtype=dtype)
    np.savez(path, **arrays)


def _keras_like(path: Path, names: list[str]) -> None:
    """A `.keras` archive's config.json, as far as the validate stage reads it (no TensorFlow)."""
    layers = [{"class_name": "Dense", "config": {"name": name}} for name in names]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": layers}}))


@pytest.mark.parametrize("fmt", ["npz", "keras"])
def test_reuse_layers_beyond_model_file_depth(workdir: Path, capsys: pytest.CaptureFixture, fmt: str) -> None:
    from stages import validate

    if fmt == "npz":
        _npz_model(workdir / "theirs.npz", 2)
        entry = {"format": "npz", "path": "theirs.npz", "name_map": {"fc1": "hidden1", "fc2": "hidden2"}}
    else:
        _keras_like(workdir / "theirs.keras", ["hidden1", "hidden2", "outputs"])
        entry = {"format": "keras", "path": "theirs.keras"}
    params = tiny_params(model_files={"theirs": entry})
    params["variants"]["deep"] = {"strategy": "reuse", "init_from": "theirs", "target": "mnist", "reuse_layers": 3}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    assert_one_line(call_main(validate.main, [], capsys), "params.yaml: variants.deep.reuse_layers", "3 > 2 hidden layers of 'theirs'")


def test_complex_weights_refused(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    from stages import validate

    _npz_model(workdir / "theirs.npz", 2, dtype=np.complex64)
    params = tiny_params(model_files={"theirs": {"format": "npz", "path": "theirs.npz", "name_map": {"fc1": "hidden1"}}})
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    assert_one_line(call_main(validate.main, [], capsys), "theirs.npz", "complex64", "real numbers")


def test_entry_name_as_argument_is_refused(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """`python -m stages.transfer ../../../../escaped` wrote files outside the repository."""
    from stages import transfer

    assert_one_line(call_main(transfer.main, ["../../../../escaped"], capsys), "variants.../../../../escaped", "not a plain name")
    assert not list(workdir.parent.rglob("escaped*"))


# ---------------------------------------------------------------- data-file cases (prepare stages, in-process)


def _mnist(x_train: Any = None, y_train: Any = None) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 6).astype(np.uint8)
    x = rng.integers(0, 256, size=(len(y), 28, 28)).astype(np.uint8)
    # an official test part of every digit, images of its own (a test image equal to a training image is refused)
    arrays = {"x_train": x, "y_train": y, "x_test": rng.integers(0, 256, size=(10, 28, 28)).astype(np.uint8),
              "y_test": np.arange(10).astype(np.uint8)}
    if x_train is not None:
        arrays["x_train"] = x_train(x) if callable(x_train) else x_train
    if y_train is not None:
        arrays["y_train"] = y_train(y) if callable(y_train) else y_train
    return arrays


def _with_nan(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    x[0, 0, 0] = np.nan
    return x


DATA_CASES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("nan_pixels", _mnist(x_train=_with_nan), ("data/raw/mnist.npz", "not all finite")),
    ("float_labels", _mnist(y_train=lambda y: y + 0.5), ("data/raw/mnist.npz", "not whole numbers")),
    ("string_pixels", _mnist(x_train=lambda x: x.astype(str)), ("data/raw/mnist.npz", "x_train: pixels have dtype <U")),
    ("empty_arrays", {key: value[:0] for key, value in _mnist().items()}, ("data/raw/mnist.npz", "no images")),
    ("passwd", Path("/etc/passwd"), ("data/raw/mnist.npz", "not a readable .npz file")),
    # our own
    ("lone_npy", "npy", ("data/raw/mnist.npz", "single .npy array")),
    ("bright_pixels", _mnist(x_train=lambda x: x.astype(np.int32) + 300), ("data/raw/mnist.npz", "outside [0, 255]")),
    ("flat_images", _mnist(x_train=lambda x: x.reshape(len(x), -1)), ("data/raw/mnist.npz", "expected (n, H, W) or (n, H, W, C)")),
    ("negative_labels", _mnist(y_train=lambda y: y.astype(np.int64) - 1), ("data/raw/mnist.npz", "negative label")),
    ("complex_pixels", _mnist(x_train=lambda x: x.astype(np.complex64)), ("data/raw/mnist.npz", "complex64")),
    ("missing_array", {"x_train": _mnist()["x_train"]}, ("data/raw/mnist.npz", "missing array(s)")),
]


def _write_data(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Path):
        shutil.copy(content, path)
    elif content == "npy":
        with path.open("wb") as handle:
            np.save(handle, np.zeros(3))
    else:
        with path.open("wb") as handle:
            np.savez(handle, **content)


@pytest.mark.parametrize("content, fragments", [case[1:] for case in DATA_CASES], ids=[case[0] for case in DATA_CASES])
def test_bad_data_file_one_line(workdir: Path, capsys: pytest.CaptureFixture, content: Any, fragments: tuple[str, ...]) -> None:
    from stages import prepare_source

    _write_data(workdir / "data/raw/mnist.npz", content)
    write_params(workdir, _set("sources.source.data", {"dataset": "mnist_npz", "path": "data/raw/mnist.npz", "classes": [0, 1, 2, 3, 4]}))
    assert_one_line(call_main(prepare_source.main, ["source"], capsys), *fragments)
    assert not (workdir / "data/prepared/sources/source.npz").exists()


def test_prepared_labels_out_of_range(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A label 7 in a 5-class file is named as such before any training (it gave a misleading message)."""
    from stages import pretrain_source

    y = np.repeat(np.arange(5), 4)
    y[3] = 7
    _write_data(workdir / "data/prepared/sources/source.npz", {
        "x_train": np.zeros((20, 28, 28, 1), np.float32), "y_train": y, "x_test": np.zeros((5, 28, 28, 1), np.float32), "y_test": np.arange(5),
    })
    assert_one_line(call_main(pretrain_source.main, ["source"], capsys), "data/prepared/sources/source.npz",
                    "y_train has label 7 outside 0..4 (5 classes)")


def test_resize_beyond_memory_is_refused(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    from stages import prepare_target

    y = np.repeat(np.arange(10), 120).astype(np.uint8)  # 600 target images of 1024 x 1024 float64: 4.7 GiB
    _write_data(workdir / "data/raw/mnist.npz", {"x_train": np.zeros((len(y), 8, 8), np.uint8), "y_train": y,
                                                 "x_test": np.zeros((0, 8, 8), np.uint8), "y_test": y[:0]})
    source = {"dataset": "mnist_npz", "path": "data/raw/mnist.npz", "classes": [0, 1, 2, 3, 4]}
    write_params(workdir, lambda p: (_set("sources.source.data", source)(p), _set("targets.mnist.image_size", 1024)(p),
                                     _set("targets.mnist.split", "seeded")(p)))  # the file has no test part: re-split
    assert_one_line(call_main(prepare_target.main, ["mnist"], capsys), "params.yaml: targets.mnist.image_size", "GiB")


# ---------------------------------------------------------------- through real DVC: nothing deleted, nothing recorded


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DVC project reading a small mnist.npz from data/raw/, validated and prepared (no training)."""
    params = tiny_params()
    params["sources"]["source"]["data"] = {"dataset": "mnist_npz", "path": "data/raw/mnist.npz", "classes": [0, 1, 2, 3, 4], "seed": 1}
    params["targets"]["mnist"].update(test_per_class=3, labels_per_class=2)
    project = make_project(tmp_path_factory.mktemp("failfast") / "project", params)
    _write_data(project / "data/raw/mnist.npz", _mnist())
    run([*DVC, "repro", *addresses("prepare_source@source", "prepare_target@mnist")], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "prepared"], project)
    return project


def _outputs(project: Path) -> dict[str, bytes | None]:
    """Every pipeline file's dvc.lock (None: not written yet) and every prepared file."""
    locks = [project / "dvc.lock", project / "inputs" / "dvc.lock", project / "variants" / "dvc.lock"]
    files = sorted(path for path in (project / "data/prepared").rglob("*") if path.is_file())
    return {**{str(lock.relative_to(project)): lock.read_bytes() if lock.is_file() else None for lock in locks},
            **{str(path.relative_to(project)): path.read_bytes() for path in files}}


DVC_CASES = [
    ("section_misspelt", lambda p: p.update(variantz={}), "params.yaml: variantz: unknown key"),
    ("model_file_missing", _set("model_files", {"theirs": {"format": "npz", "path": "gone.npz"}}), "model_files.theirs.path"),
    ("frozen_beyond_reuse", _set("variants.freeze2.frozen_layers", 5), "variants.freeze2.frozen_layers: 5 > reuse_layers 3"),
    # models/nobody.keras is a dependency no stage makes: validate names the key before DVC looks for the file
    ("init_from_nobody", _set("variants.scratch.init_from", "nobody"), "params.yaml: variants.scratch.init_from: 'nobody' is not configured"),
]


@pytest.mark.parametrize("change, fragment", [case[1:] for case in DVC_CASES], ids=[case[0] for case in DVC_CASES])
def test_repro_stops_at_validate(dvc_project: Path, change: Any, fragment: str) -> None:
    before = _outputs(dvc_project)
    params = yaml.safe_load((dvc_project / "params.yaml").read_text())
    change(params)
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = run([*DVC, "repro"], dvc_project, check=False)
        assert result.returncode != 0
        assert "Running stage 'validate'" in result.stdout and f"Running stage '{INPUTS}:prepare" not in result.stdout
        assert_one_line(result.stderr, fragment)
        assert _outputs(dvc_project) == before
    finally:
        run(["git", "checkout", "-q", "params.yaml"], dvc_project)


def test_replaced_data_file_marks_prepare_changed(dvc_project: Path) -> None:
    status = [*DVC, "status", "--json", *addresses("prepare_source@source", "prepare_target@mnist")]
    assert json.loads(run(status, dvc_project).stdout) == {}
    original = (dvc_project / "data/raw/mnist.npz").read_bytes()
    try:
        _write_data(dvc_project / "data/raw/mnist.npz", _mnist(x_train=lambda x: 255 - x))
        changed = json.loads(run(status, dvc_project).stdout)
        assert sorted(changed) == addresses("prepare_source@source", "prepare_target@mnist")
        assert changed[address("prepare_source@source")] == [{"changed deps": {"data/raw": "modified"}}]
    finally:
        (dvc_project / "data/raw/mnist.npz").write_bytes(original)
    # valid, unchanged params: validate reruns (params.yaml touched) but nothing below it does
    (dvc_project / "params.yaml").write_text((dvc_project / "params.yaml").read_text() + "\n# a comment\n")
    try:
        out = run([*DVC, "repro", *addresses("prepare_source@source", "prepare_target@mnist")], dvc_project).stdout
        assert f"Running stage '{INPUTS}:prepare" not in out and "Running stage" not in out.replace("Running stage 'validate'", "")
    finally:
        run(["git", "checkout", "-q", "params.yaml"], dvc_project)
        run([*DVC, "repro", "validate"], dvc_project)


# ---------------------------------------------------------------- faults: tracking server, store, signals, orphans


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_fails_fast_before_training(dvc_project: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(dvc_project, workdir, ignore=shutil.ignore_patterns(".dvc", ".git"))
    uri = f"http://127.0.0.1:{_free_port()}"
    env = {**stage_env(workdir), "MLFLOW_TRACKING_URI": uri}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "stages.pretrain_source", "source"], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 30
    assert result.returncode == EXIT_BAD_INPUT
    assert_one_line(result.stderr, f"MLflow tracking server {uri} is not reachable", "unset MLFLOW_TRACKING_URI")
    assert not any((workdir / f).exists() for f in ("models/source.keras", "metrics/source.json", "runs/source.json"))


class _DyingServer(BaseHTTPRequestHandler):
    """Answers /health, then the server is gone: what a stage sees when the server dies mid-stage."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")
        threading.Thread(target=self._die).start()

    def _die(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # refused from now on (a hung server is bounded by the request timeout)

    def log_message(self, *args: Any) -> None:
        pass


STAGE_SCRIPT = textwrap.dedent(
    """
    import time
    from transferlab import tracking
    from transferlab.launch.cli import run_main

    def main(argv):
        with tracking.stage_run("t", "long", {"stage": "probe"}, {}):
            print("started", flush=True)
            time.sleep(60)

    run_main(main)
    """
)


def test_server_lost_fails_stage_in_bounded_time(tmp_path: Path) -> None:
    """Default (bounded) retries: the stage ends with one line in seconds, not after minutes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DyingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    env = {**stage_env(tmp_path), "MLFLOW_TRACKING_URI": uri}
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        env.pop(name, None)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", STAGE_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30
    assert result.returncode == EXIT_BAD_INPUT
    assert_one_line(result.stderr, f"MLflow store {uri} failed", "nothing was recorded as done")


def test_http_budget_is_bounded() -> None:
    """MLflow's own defaults retry a dead server for minutes; ours are set unless the user set theirs."""
    from transferlab import tracking

    budget = {name: os.environ[name] for name in tracking.HTTP_DEFAULTS}
    assert int(tracking.HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 3
    assert int(tracking.HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"]) <= 10
    assert all(value for value in budget.values())


def test_read_only_store_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab import tracking
    from transferlab.errors import TrackingError

    monkeypatch.chdir(tmp_path)
    sqlite3.connect(tmp_path / "ro.db").close()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///file:{tmp_path / 'ro.db'}?mode=ro&uri=true")
    with pytest.raises(TrackingError, match="readonly database"), tracking.stage_run("t", "x", {"stage": "probe"}, {}):
        pass


def test_stale_running_runs_are_marked_killed(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILLed stage left its runs RUNNING; the next run of the same stage marks them KILLED."""
    from mlflow.tracking import MlflowClient

    from transferlab import tracking

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    client = MlflowClient(uri)
    experiment_id = tracking.set_experiment("t")
    stale = client.create_run(experiment_id, tags={"stage": "transfer@a", tracking.PROCESS_TAG: tracking.process_tag(dead.pid)})
    other = client.create_run(experiment_id, tags={"stage": "transfer@b", tracking.PROCESS_TAG: tracking.process_tag(dead.pid)})
    alive = client.create_run(experiment_id, tags={"stage": "transfer@a", tracking.PROCESS_TAG: tracking.process_tag()})
    with tracking.stage_run("t", "a", {"stage": "transfer@a"}, {}) as ids:
        assert client.get_run(ids["mlflow_run_id"]).data.tags[tracking.PROCESS_TAG] == tracking.process_tag()
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # another stage's: not ours to judge
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"  # its process lives


def test_artifacts_go_to_mlartifacts_beside_the_store(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """The repository's store keeps artifacts in `mlartifacts/` beside it, set through MLflow's API (an absolute
    location: MLflow resolves local ones); a copy of the repository with its store is told that its runs
    write into the original's folder, which MLflow's API cannot change."""
    from mlflow.tracking import MlflowClient

    from transferlab import tracking

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "file.txt").write_text("x")
    with tracking.stage_run("t", "a", {"stage": "probe"}, {}) as ids:
        tracking.log_files([tmp_path / "file.txt"])
    experiment = MlflowClient(tracking.tracking_uri()).get_experiment(ids["mlflow_experiment_id"])
    assert experiment.artifact_location == str(tmp_path / "mlartifacts")
    assert (tmp_path / "mlartifacts" / ids["mlflow_run_id"] / "artifacts/file.txt").is_file()
    assert not (tmp_path / "mlruns").exists()
    assert "note:" not in capsys.readouterr().err

    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(tmp_path / "mlflow.db", copy / "mlflow.db")
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow exported the first store's
    with tracking.stage_run("t", "b", {"stage": "probe"}, {}):
        pass
    (note,) = capsys.readouterr().err.strip().splitlines()
    assert note.startswith(f"note: MLflow store {copy / 'mlflow.db'} was made in {tmp_path}:"), note
    assert f"keeps artifacts in {tmp_path / 'mlartifacts'}" in note and "move mlflow.db aside" in note


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialized, empty MLflow SQLite store to copy: creating the tables takes seconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_one_line_and_killed(tmp_path: Path, empty_store: Path, sig: signal.Signals) -> None:
    from mlflow.tracking import MlflowClient

    shutil.copy(empty_store, tmp_path / "mlflow.db")
    process = subprocess.Popen([sys.executable, "-c", STAGE_SCRIPT], cwd=tmp_path, env=stage_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "started"  # the run exists
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + sig
    assert_one_line(stderr, "stopped by SIGTERM" if sig == signal.SIGTERM else "interrupted (Ctrl-C)")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t")
    assert [r.info.status for r in client.search_runs([experiment.experiment_id])] == ["KILLED"]


def test_stage_dies_with_its_parent(tmp_path: Path) -> None:
    """SIGKILL to the parent (as to `dvc`) must not leave the stage running on its own."""
    stage = textwrap.dedent(
        """
        import os, time
        from transferlab.launch.cli import run_main
        def main(argv):
            open("stage.pid", "w").write(str(os.getpid()))
            time.sleep(60)
        run_main(main)
        """
    )
    parent_code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {stage!r}]); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=tmp_path, env=stage_env(tmp_path))
    pid_file = tmp_path / "stage.pid"
    for _ in range(300):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    assert_process_ends(child, "the stage outlived its parent", seconds=10.0)


# ---------------------------------------------------------------- deterministic .keras bytes


def test_same_weights_same_keras_bytes(tmp_path: Path) -> None:
    import keras

    from transferlab import artifacts

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden1")])
    artifacts.save_with(tmp_path / "a.keras", model.save)
    time.sleep(2.1)  # zip timestamps have a 2 s resolution
    artifacts.save_with(tmp_path / "b.keras", model.save)
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = keras.saving.load_model(tmp_path / "b.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded.get_layer("hidden1").get_weights()[0], model.get_layer("hidden1").get_weights()[0])
    # another process: Keras writes memory addresses (id()) as shared_object_id into config.json
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(entries["config.json"])
    raw = json.dumps(config)
    assert '"shared_object_id": 1' in raw
    with zipfile.ZipFile(tmp_path / "c.keras", "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, raw.replace('"shared_object_id": 1', '"shared_object_id": 140352875526416') if name == "config.json" else content)
    artifacts.deterministic_zip(tmp_path / "c.keras")
    assert (tmp_path / "c.keras").read_bytes() == (tmp_path / "a.keras").read_bytes()


def test_same_arrays_same_npz_bytes(tmp_path: Path) -> None:
    from transferlab.data import datafiles

    arrays = {"x_train": np.arange(12, dtype=np.float32).reshape(3, 4), "y_train": np.arange(3)}
    datafiles.save_npz(tmp_path / "a.npz", **arrays)
    time.sleep(2.1)
    datafiles.save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    np.testing.assert_array_equal(datafiles.load_npz(tmp_path / "b.npz", ("x_train",))["x_train"], arrays["x_train"])
