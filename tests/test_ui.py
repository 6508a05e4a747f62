"""`make ui` serves the MLflow UI on the loopback interface only, over the configured store, in few processes."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
from conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_make_ui_listens_on_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    # -o: treat the install stamp as up to date, so the test never reinstalls the environment
    process = subprocess.Popen(
        ["make", "-s", "-o", ".venv/.installed", "ui", f"UI_PORT={port}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        assert process.stdout.readline().strip() == f"MLflow UI: http://127.0.0.1:{port}  (Ctrl-C to stop)"
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10", timeout=5) as reply:
                    answer = json.load(reply)
            except OSError:
                time.sleep(1)
        assert answer is not None, "the UI did not answer within 90 s"
        assert [e["name"] for e in answer["experiments"]] == ["Default"]
        listening = {
            c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}
        # lean: no job runner (MLflow 3 starts ~10 processes and 2.6 GiB with MLflow's GenAI job execution)
        started = psutil.Process(process.pid).children(recursive=True)  # under make: the mlflow CLI and its server
        resident = sum(p.memory_info().rss for p in started if p.is_running()) / 2**20
        print(f"make ui: {len(started)} processes, {resident:.0f} MiB resident", [p.name() for p in started])
        assert len(started) <= 2, [p.cmdline()[:3] for p in started]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
