"""No secret in a report or an error line, no hang on a hostile file (issue 26).

Each test reproduced its defect first. Credentials are checked against a real MLflow client
talking to a real HTTP server on 127.0.0.1 (one that answers `/health` and fails every API call,
as a misconfigured proxy does), and against the CLI's own printing.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import address, hostile_file
from test_failfast import (
    _mnist,
    _rename,
    _set,
    assert_one_line,
    call_main,
    write_params,
)

from transferlab.config import load_params
from transferlab.data import check_images
from transferlab.errors import (
    ConfigError,
    DataError,
    TrackingError,
    TransferlabError,
    scrub,
)
from transferlab.launch.cli import EXIT_BAD_INPUT, run_main
from transferlab.report import render

SECRET = "S3cr3tPW"
TOKEN = "tok3nXYZ"


# ---------------------------------------------------------------- defect 1: report links


@pytest.mark.parametrize("uri", [
    f"http://alice:{SECRET}@127.0.0.1:5941",
    f"http://alice:{SECRET}@127.0.0.1:5941/",
    f"https://{SECRET}@mlflow.example/?token={TOKEN}",
    f"http://127.0.0.1:5941/?access_token={TOKEN}#frag",
])
def test_report_links_never_carry_credentials(uri: str) -> None:
    ui = render.ui_address(uri)
    link = render.run_link(ui, "3", "abcdef0123456789")
    for secret in (SECRET, TOKEN, "alice", "@"):
        assert secret not in ui and secret not in link, link
    assert ui in ("http://127.0.0.1:5941", "https://mlflow.example")
    assert link.endswith("/#/experiments/3/runs/abcdef0123456789?workflowType=machine_learning)")


def test_run_link_scrubs_a_credentialed_ui_given_directly() -> None:
    link = render.run_link(f"http://alice:{SECRET}@host:1/?token={TOKEN}", "1", "abcdef0123456789")
    assert SECRET not in link and TOKEN not in link and link.startswith("[abcdef01](http://host:1/#/")


# ---------------------------------------------------------------- defect 2: error lines


@pytest.mark.parametrize("text", [
    f"API request to http://alice:{SECRET}@127.0.0.1:5941/api/2.0/x failed",
    f"postgresql://bob:{SECRET}@db:5432/mlflow refused; retry http://u:{SECRET}@h/?token={TOKEN}",
    f"see https://h/p?api_key={TOKEN}&x=1 and sqlite:////tmp/m.db",
])
def test_scrub_removes_userinfo_and_query_anywhere_in_a_line(text: str) -> None:
    clean = scrub(text)
    assert SECRET not in clean and TOKEN not in clean, clean
    assert "sqlite:////tmp/m.db" in scrub("sqlite:////tmp/m.db")


def test_scrub_hides_credentials_from_the_environment_but_not_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://{TOKEN}@mlflow.example")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    assert scrub(f"user {TOKEN} said {SECRET}: true") == "user *** said ***: true"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///file:/tmp/ro.db?mode=ro&uri=true")
    assert scrub("readonly: true, mode ro") == "readonly: true, mode ro"


class _HealthyButBroken(BaseHTTPRequestHandler):
    """`/health` answers 200; every MLflow API call answers 500 (a proxy in front of a broken server)."""

    def do_GET(self) -> None:  # noqa: N802
        ok = self.path.endswith("/health")
        self.send_response(200 if ok else 500)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"internal error")

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def broken_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HealthyButBroken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_mlflow_error_text_is_scrubbed(broken_server: int, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    """A real MLflow call fails against the server; the error line it becomes names the address, not the password."""
    from transferlab import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{SECRET}@127.0.0.1:{broken_server}/?token={TOKEN}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    def main(argv: list[str]) -> None:
        with tracking.stage_run("t", "x", {"stage": "probe"}, {}):
            pass

    with pytest.raises(SystemExit) as stopped:
        run_main(main, [])
    assert stopped.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"127.0.0.1:{broken_server}" in err and "failed" in err, err
    assert SECRET not in err and TOKEN not in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unreachable_server_line_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    from transferlab import tracking

    with pytest.raises(TransferlabError) as error:
        tracking.check_store(f"http://alice:{SECRET}@127.0.0.1:1/?token={TOKEN}")
    assert "127.0.0.1:1" in str(error.value) and SECRET not in str(error.value) and TOKEN not in str(error.value)


def test_cli_scrubs_any_error_it_prints(capsys: pytest.CaptureFixture) -> None:
    def main(argv: list[str]) -> None:
        raise TransferlabError(f"models:/m/1: cannot download http://u:{SECRET}@h/a?sig={TOKEN} (boom)")

    with pytest.raises(SystemExit):
        run_main(main, [])
    err = capsys.readouterr().err
    assert SECRET not in err and TOKEN not in err and "models:/m/1: cannot download http://" in err


# ---------------------------------------------------------------- defect 8: small ones


def test_stray_label_in_a_5_class_pool_is_not_called_6_classes(tmp_path: Path) -> None:
    y = np.repeat(np.arange(5), 4)
    y[3] = 7
    arrays = {"x_pool": np.zeros((20, 28, 28, 1), np.float32), "y_pool": y,
              "x_test": np.zeros((5, 28, 28, 1), np.float32), "y_test": np.arange(5)}
    with pytest.raises(DataError) as unnamed:
        check_images(arrays, tmp_path / "t.npz")
    assert "6 classes" not in str(unnamed.value) and "label 7" in str(unnamed.value), unnamed.value
    assert "0, 1, 2, 3, 4, 7" in str(unnamed.value)
    with pytest.raises(DataError, match=r"y_pool has label 7 outside 0\.\.4 \(5 classes\)"):
        check_images(arrays, tmp_path / "t.npz", n_classes=5)


def test_store_folder_that_does_not_exist_is_not_called_read_only(tmp_path: Path) -> None:
    """MLflow creates a missing store folder: fine under a writable one, and a refusal names the read-only one."""
    from transferlab import tracking

    tracking.check_store(f"sqlite:///{tmp_path / 'missing' / 'deeper' / 'mlflow.db'}")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.access(locked, os.W_OK):
        pytest.skip("running as root: no folder is read-only")
    with pytest.raises(TrackingError) as error:
        tracking.check_store(f"sqlite:///{locked / 'missing' / 'mlflow.db'}")
    assert f"({locked} is read-only)" in str(error.value), error.value


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    """Nine levels of ten aliases each: 10^9 values once expanded (pydantic, MLflow params); refused in milliseconds."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (tmp_path / "params.yaml").write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    with pytest.raises(ConfigError) as error:
        load_params(tmp_path / "params.yaml")
    assert time.monotonic() - start < 5
    assert str(error.value).startswith("params.yaml: (file): ") and "aliases" in str(error.value), error.value
    assert len(str(error.value).splitlines()) == 1


# ---------------------------------------------------------------- defect 5: FIFOs and symlinks in data/raw


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A blocked open() of a FIFO fails the test in 20 s instead of hanging it (SIGALRM interrupts the call)."""
    def stop(*_: Any) -> None:
        raise TimeoutError("blocked: the call hung on a hostile file")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _npz_params(workdir: Path, path: str = "data/raw/mnist.npz", dataset: str = "mnist_npz") -> None:
    write_params(workdir, _set("sources.source.data", {"dataset": dataset, "path": path, "classes": [0, 1, 2, 3, 4]}))


@pytest.mark.parametrize("kind, fragment", [
    ("fifo", "not a regular file (a FIFO)"),
    ("/dev/zero", "outside data/raw"),
    ("/etc/passwd", "outside data/raw"),
])
def test_validate_refuses_hostile_npz_before_reading_it(workdir: Path, capsys: pytest.CaptureFixture, no_hang: None,
                                                         kind: str, fragment: str) -> None:
    from stages import validate

    hostile_file(workdir / "data/raw/mnist.npz", kind)
    _npz_params(workdir)
    assert_one_line(call_main(validate.main, [], capsys), "sources.source.data.path", "data/raw/mnist.npz", fragment)
    assert not (workdir / "data/prepared/params_ok.json").exists()


@pytest.mark.parametrize("kind, fragment", [("fifo", "not a regular file (a FIFO)"), ("/dev/zero", "outside data/raw")])
def test_validate_refuses_hostile_idx_file(workdir: Path, capsys: pytest.CaptureFixture, no_hang: None,
                                           kind: str, fragment: str) -> None:
    from stages import validate
    from transferlab.data.loaders import IDX_FILES

    for name in IDX_FILES.values():
        (workdir / "data/raw/idx").mkdir(parents=True, exist_ok=True)
        (workdir / "data/raw/idx" / name).write_bytes(b"")
    (workdir / "data/raw/idx" / IDX_FILES["x_test"]).unlink()
    hostile_file(workdir / "data/raw/idx" / IDX_FILES["x_test"], kind)
    _npz_params(workdir, "data/raw/idx", "mnist_idx")
    assert_one_line(call_main(validate.main, [], capsys), "sources.source.data.path", IDX_FILES["x_test"], fragment)


def test_validate_refuses_a_fifo_anywhere_in_data_raw(workdir: Path, capsys: pytest.CaptureFixture, no_hang: None) -> None:
    """DVC hashes all of data/raw (a dependency of validate and the prepare stages): a FIFO there blocks it."""
    from stages import validate

    hostile_file(workdir / "data/raw/sub/pipe", "fifo")
    assert_one_line(call_main(validate.main, [], capsys), "data/raw/sub/pipe", "not a regular file (a FIFO)")


def test_symlink_inside_data_raw_is_followed(workdir: Path) -> None:
    """The containment check is on the resolved path: a link within data/raw passes, one leaving it does not."""
    from stages import validate

    (workdir / "data/raw").mkdir(parents=True)
    (workdir / "outside.npz").write_bytes(b"")
    (workdir / "data/raw/real.npz").write_bytes(b"")
    (workdir / "data/raw/mnist.npz").symlink_to("real.npz")
    (workdir / "data/raw/away.npz").symlink_to("../../outside.npz")
    validate.check_data_path("k", "data/raw/mnist.npz", "mnist_npz")
    with pytest.raises(ConfigError, match=r"k: data/raw/away.npz is a link to .*outside.npz, outside data/raw/"):
        validate.check_data_path("k", "data/raw/away.npz", "mnist_npz")


@pytest.mark.parametrize("reader", ["npz", "idx"])
def test_loaders_refuse_a_fifo_without_blocking(tmp_path: Path, no_hang: None, reader: str) -> None:
    from transferlab.data import datafiles

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(DataError, match=r"pipe: not a regular file \(a FIFO\)"):
        if reader == "npz":
            datafiles.load_npz(tmp_path / "pipe", ("x_train",))
        else:
            datafiles.read_idx(tmp_path / "pipe")


def test_validate_refuses_a_fifo_model_file(workdir: Path, capsys: pytest.CaptureFixture, no_hang: None) -> None:
    from stages import validate

    os.mkfifo(workdir / "theirs.npz")
    write_params(workdir, _set("model_files", {"theirs": {"format": "npz", "path": "theirs.npz"}}))
    assert_one_line(call_main(validate.main, [], capsys), "model_files.theirs.path", "theirs.npz", "not a regular file (a FIFO)")


# ---------------------------------------------------------------- defect 6: a size cap read from array headers


def _npz_claiming(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose x_train header claims `shape` (uint8) but holds no data: what a hostile file needs to be."""
    arrays = _mnist()
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            if key == "x_train":
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
                archive.writestr("x_train.npy", header.getvalue())
            else:
                member = io.BytesIO()
                np.save(member, value)
                archive.writestr(f"{key}.npy", member.getvalue())


def test_npz_header_claiming_terabytes_is_refused_before_loading(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    from stages import prepare_source

    _npz_claiming(workdir / "data/raw/mnist.npz", (10**10, 28, 28))
    _npz_params(workdir)
    assert_one_line(call_main(prepare_source.main, ["source"], capsys), "data/raw/mnist.npz", "x_train",
                    "(10000000000, 28, 28)", "sources.source.data.max_array_mb 512")


def test_npz_bomb_over_a_stated_cap_is_refused_in_validate(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A compressed member that inflates past the cap: refused from its header, before it is inflated."""
    from stages import validate

    arrays = _mnist(x_train=np.zeros((3000, 28, 28), np.uint8), y_train=np.zeros(3000, np.uint8))
    (workdir / "data/raw").mkdir(parents=True)
    with (workdir / "data/raw/mnist.npz").open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    assert (workdir / "data/raw/mnist.npz").stat().st_size < 100_000
    write_params(workdir, _set("sources.source.data", {"dataset": "mnist_npz", "path": "data/raw/mnist.npz",
                                                       "classes": [0, 1, 2, 3, 4], "max_array_mb": 1}))
    assert_one_line(call_main(validate.main, [], capsys), "data/raw/mnist.npz", "x_train", "2.4 MB",
                    "sources.source.data.max_array_mb 1")


def test_idx_header_claiming_terabytes_is_refused_before_reading(tmp_path: Path) -> None:
    from transferlab.data import datafiles

    with gzip.open(tmp_path / "x.gz", "wb") as handle:
        handle.write(b"\x00\x00\x08\x03" + (10**9).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
    with pytest.raises(DataError, match=r"x.gz: .*\(1000000000, 28, 28\).*over .*max_array_mb 512"):
        datafiles.read_idx(tmp_path / "x.gz", datafiles.Cap(512 * 10**6, "sources.source.data.max_array_mb"))


def test_max_array_mb_is_a_positive_param() -> None:
    from conftest import tiny_params

    from transferlab.config import parse_params

    params = tiny_params()
    params["sources"]["source"]["data"]["max_array_mb"] = 0
    with pytest.raises(ConfigError, match=r"sources.source.data.max_array_mb"):
        parse_params(params)


# ---------------------------------------------------------------- defect 7: failures that used to wait for run time


def test_overlong_variant_name_is_refused_by_validate(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A 246-character name passed validate, trained for 22 s, then failed with "File name too long"."""
    from stages import validate

    long_name = "v" * 246
    write_params(workdir, _rename("variants", "freeze2", long_name))
    line = assert_one_line(call_main(validate.main, [], capsys), f"variants.{long_name}", "246 characters", "at most 64")
    assert len(line) < 600
    assert not (workdir / "data/prepared/params_ok.json").exists()


def test_every_name_that_fits_makes_files_that_fit(tmp_path: Path) -> None:
    """The longest allowed name, through every path it becomes (and the temp file beside it), is a valid file name."""
    from transferlab import artifacts, paths
    from transferlab.config import MAX_NAME_LENGTH

    name = "n" * MAX_NAME_LENGTH
    for make in (paths.source_data, paths.target_data, paths.init_model, paths.variant_model, paths.variant_history):
        with artifacts.atomic_path(tmp_path / make(name)) as tmp:
            tmp.write_text("x")
        assert (tmp_path / make(name)).is_file()


def test_a_run_time_failure_leaves_committed_outputs_restorable(tmp_path: Path) -> None:
    """DVC deletes a stage's outputs before running it; a run-time failure (here: the tracking server gone)
    then leaves them deleted and dvc.lock unchanged. What the README promises: `dvc checkout` brings back
    the cached outputs and `git checkout -- metrics plots runs` the committed ones, byte for byte."""
    from conftest import make_project, run, tiny_params

    project = make_project(tmp_path / "project", tiny_params())
    run([sys.executable, "-m", "dvc", "repro", "-q", address("pretrain_source@source")], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "source trained"], project)
    outputs = ["models/source.keras", "metrics/source.json", "plots/source.csv", "runs/source.json"]
    before = {name: (project / name).read_bytes() for name in [*outputs, "inputs/dvc.lock"]}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["sources"]["source"]["train"]["epochs"] += 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{sock.getsockname()[1]}"
    failed = run([sys.executable, "-m", "dvc", "repro", address("pretrain_source@source")], project, check=False,
                 env={"MLFLOW_TRACKING_URI": gone})
    assert failed.returncode != 0 and f"MLflow tracking server {gone} is not reachable" in failed.stderr
    assert not any((project / name).exists() for name in outputs)  # DVC's doing, before the stage ran
    assert (project / "inputs/dvc.lock").read_bytes() == before["inputs/dvc.lock"]  # nothing recorded as done
    run(["git", "checkout", "-q", "--", "params.yaml", "metrics", "plots", "runs"], project)
    run([sys.executable, "-m", "dvc", "checkout", address("pretrain_source@source")], project)
    assert {name: (project / name).read_bytes() for name in before} == before
    assert "up to date" in run([sys.executable, "-m", "dvc", "status", address("pretrain_source@source")], project).stdout


# ---------------------------------------------------------------- defect 4: queued experiments keep their artifacts


def test_a_run_from_a_temp_copy_keeps_its_artifacts_in_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dvc exp run --queue` runs stages in a temporary copy of the repository, tracking to the main store
    (the README's MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db). A location resolved against the working
    directory would be inside that copy, which DVC deletes: the run's artifacts must land beside the store."""
    from mlflow.tracking import MlflowClient

    from transferlab import tracking

    main, copy = tmp_path / "main", tmp_path / "main/.dvc/tmp/exps/tmp123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(main)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking.stage_run("t", "in the repository", {"stage": "probe"}, {}):
        pass  # the experiment exists, with its relative location, as after any `make run`
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{main / 'mlflow.db'}")
    monkeypatch.chdir(copy)
    (copy / "model.keras").write_text("weights")
    with tracking.stage_run("t", "queued", {"stage": "probe"}, {}) as ids, tracking.child_run("rep1", {}) as child:
        tracking.log_files([copy / "model.keras"])
    monkeypatch.chdir(main)
    shutil.rmtree(main / ".dvc")  # what DVC does with the temp copy once the experiment is done
    client = MlflowClient(f"sqlite:///{main / 'mlflow.db'}")
    for run_id in (ids["mlflow_run_id"], child):
        assert client.get_run(run_id).info.artifact_uri.startswith(str(main / "mlartifacts")), client.get_run(run_id).info.artifact_uri
    fetched = client.download_artifacts(child, "model.keras", str(tmp_path))
    assert Path(fetched).read_text() == "weights"


def test_a_store_with_a_relative_location_keeps_a_temp_copys_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store made by earlier versions holds the relative location `mlartifacts/<id>` (they wrote it into MLflow's
    table; MLflow's API cannot): a queued run's files still land beside the store, not in the temporary copy."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from transferlab import tracking

    main, copy = tmp_path / "main", tmp_path / "main/.dvc/tmp/exps/tmp123"
    copy.mkdir(parents=True)
    monkeypatch.chdir(main)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{main / 'mlflow.db'}")
    experiment_id = tracking.set_experiment("t")
    with sqlite3.connect(main / "mlflow.db") as db:  # the store as earlier versions left it
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (f"mlartifacts/{experiment_id}", int(experiment_id)))
    db.close()
    monkeypatch.chdir(copy)
    (copy / "model.keras").write_text("weights")
    with tracking.stage_run("t", "queued", {"stage": "probe"}, {}), tracking.child_run("rep1", {}) as child:
        tracking.log_files([Path("model.keras")])  # relative to the stage's working directory, the copy
        assert Path.cwd() == copy
    monkeypatch.chdir(main)
    shutil.rmtree(main / ".dvc")
    client = MlflowClient(f"sqlite:///{main / 'mlflow.db'}")
    assert client.get_run(child).info.artifact_uri == f"mlartifacts/{experiment_id}/{child}/artifacts"
    assert (main / "mlartifacts" / experiment_id / child / "artifacts/model.keras").read_text() == "weights"


# defect 3, a Ray head is not an open door: tests/test_ray.py starts its head as docs/operations.md does (every port on
# 127.0.0.1, token auth), finds no listening socket of the head, its workers or a driver outside loopback, and checks
# that a driver without the token is refused


def test_reuse_layers_deeper_than_a_registry_model_names_the_key(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """A registry entry's depth is known only once it is fetched: the import stage (before any variant
    trains, so before DVC deletes a variant's outputs) names the variant's key and keeps no file."""
    import mlflow

    from stages import import_model
    from transferlab import paths, tracking
    from transferlab.models import networks
    from transferlab.tracking import registry

    model = networks.build(784, networks.dnn_layers([8, 8], "relu", 5), "he_normal", 1)
    model.save(workdir / "two.keras")
    with tracking.stage_run("tests", "publish", {"stage": "probe"}, {}):
        registry.register_keras(workdir / "two.keras", "two", {}, np.zeros((2, 784), np.float32))
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((20, 28, 28, 1), np.float32), "y_train": np.arange(20) % 5,
              "x_test": rng.random((5, 28, 28, 1), np.float32), "y_test": np.arange(5)}
    from transferlab.data.datafiles import save_npz

    save_npz(workdir / paths.source_data("source"), **arrays)
    write_params(workdir, lambda p: (p["zoo"].update(two={"kind": "registry", "uri": "models:/two/1"}),
                                     p["variants"]["freeze2"].update(init_from="two", reuse_layers=3, frozen_layers=2)))
    assert_one_line(call_main(import_model.main, ["two"], capsys), "params.yaml: variants.freeze2.reuse_layers",
                    "3 > 2 hidden layers of 'two'")
    assert not (workdir / paths.init_model("two")).exists() and not (workdir / paths.init_metrics("two")).exists()
    assert mlflow.active_run() is None


def test_a_full_disk_is_one_line_and_a_failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Writing to /dev/full fails as a full disk does (ENOSPC): one line naming the file, the run FAILED."""
    from mlflow.tracking import MlflowClient

    from transferlab import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    from transferlab import artifacts

    started: dict[str, str] = {}

    def fill(_: Path) -> None:
        with open("/dev/full", "w") as handle:  # noqa: PTH123
            handle.write("x" * 10000)
            handle.flush()

    def main(argv: list[str]) -> None:
        with tracking.stage_run("t", "full", {"stage": "probe"}, {}) as ids:
            started.update(ids)
            if argv == ["output"]:  # the project's own writer names the output it could not write
                with artifacts.atomic_path(tmp_path / "metrics" / "m.json") as tmp:
                    fill(tmp)
            fill(tmp_path)  # anyone else's write: one line all the same

    for argv, where in ((["output"], f"{tmp_path}/metrics/m.json: cannot be written (No space left on device)"),
                        ([], "error: writing an output: No space left on device")):
        with pytest.raises(SystemExit) as stopped:
            run_main(main, argv)
        assert stopped.value.code == EXIT_BAD_INPUT
        assert_one_line(capsys.readouterr().err, where, "nothing was recorded as done")
        assert MlflowClient().get_run(started["mlflow_run_id"]).info.status == "FAILED"
        assert not (tmp_path / "metrics" / "m.json").exists() and not list((tmp_path / "metrics").glob(".*"))


@pytest.mark.slow
def test_two_queued_experiments_keep_their_models(tmp_path: Path) -> None:
    """The README's recipe: `dvc exp run --queue` twice, `dvc queue start -j 2`; both runs' models load from MLflow
    after DVC has removed the temporary workspaces they ran in."""
    from conftest import make_project, run, tiny_params
    from mlflow.tracking import MlflowClient

    from transferlab.models.zoo import load_keras

    project = make_project(tmp_path / "project", tiny_params())
    dvc = [sys.executable, "-m", "dvc"]
    for seed in (1, 2):
        run([*dvc, "exp", "run", "--queue", "-S", f"sources.source.train.seed={seed}", address("pretrain_source@source")], project)
    run([*dvc, "queue", "start", "-j", "2"], project)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run([*dvc, "queue", "status"], project).stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(5)
    logs = [run([*dvc, "queue", "logs", line.split()[0]], project, check=False) for line in status.splitlines()[1:3]]
    assert status.count("Success") == 2, status + "".join(log.stdout[-3000:] + log.stderr[-1000:] for log in logs)
    run([*dvc, "queue", "stop"], project, check=False)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'transferlab-source'")
    assert len(versions) == 2
    assert not list((project / ".dvc" / "tmp" / "exps").glob("tmp*"))  # the temporary workspaces are gone
    for version in versions:
        run_info = client.get_run(version.run_id).info
        assert run_info.artifact_uri.startswith(str(project / "mlartifacts")), run_info.artifact_uri
        # the registered MLflow model beside the store too (its location under the store's folder, as the runs'),
        # read through the client of this store (a `models:/` URI would go through the process-wide registry URI)
        location = project / client.get_model_version_download_uri("transferlab-source", version.version)
        kept = sorted(location.rglob("*.keras"))
        assert kept, location
        assert load_keras(kept[0]).count_params() > 0  # loads, in safe mode, as the zoo loads it


def test_two_stages_starting_on_a_fresh_store_both_record(tmp_path: Path) -> None:
    """Two queued experiments start at once on a store not yet made: MLflow's table creation raced
    ("duplicate column name: step") and one stage failed."""
    script = textwrap.dedent("""
        from transferlab import tracking
        from transferlab.launch.cli import run_main

        def main(argv):
            with tracking.stage_run("t", "x", {"stage": "probe"}, {}):
                pass

        run_main(main)
        """)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    env.pop("TRANSFERLAB_WARM_SOCKET", None)
    stages = [subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    errors = [stage.communicate(timeout=120)[1] for stage in stages]
    assert [stage.returncode for stage in stages] == [0, 0, 0], errors


def test_model_npz_header_over_its_cap_is_refused_in_validate(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    """Weights files are read whole by validate (their depth) and by the import: their headers are checked first."""
    from stages import validate

    with zipfile.ZipFile(workdir / "theirs.npz", "w") as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**5)})
        archive.writestr("hidden1/kernel.npy", header.getvalue())
    write_params(workdir, _set("model_files", {"theirs": {"format": "npz", "path": "theirs.npz"}}))
    assert_one_line(call_main(validate.main, [], capsys), "theirs.npz", "hidden1/kernel", "(1000000, 100000)",
                    "model_files.theirs.max_array_mb 512")
