"""Stage wall time, cold vs warm start, and a sweep in-process vs on a local 2-CPU Ray cluster (not a test).

    python -m bench.stage_start WORKSPACE [--stage transfer:freeze2] [--sweep label_budget] [--rounds 3]
                                [--out bench/stage_start.md]

WORKSPACE is a throw-away copy of a checkout where `dvc repro` has run (prepared data and models
present): each measurement runs the stage's real command (`python -m stages.<module> <entry>`)
there, against a throw-away MLflow store, and rewrites that stage's outputs (new run ids and
timings, so the copy's `dvc status` no longer matches its dvc.lock). Cold: a plain process, as `dvc repro` starts
it. Warm: through a `transferlab.launch.warm` stage server started once. Ray: the sweep with RAY_ADDRESS
naming a head started here with `--num-cpus 2` (2 workers on this machine's 2 cores). Rounds are
interleaved (cold, warm, cold, warm, …) so a burst of load hits both; medians are quoted.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transferlab.launch import stage_server, warm


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    if "running cold" in result.stderr and warm.SOCKET_VARIABLE in env:
        raise SystemExit(f"the warm run fell back to cold:\n{result.stderr[-500:]}")
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--stage", default="transfer:freeze2", help="module:entry of the stage timed cold and warm")
    parser.add_argument("--sweep", default="label_budget", help="the sweep timed in-process and on Ray")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/stage_start.md"))
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    store = tempfile.mkdtemp(prefix="bench-mlflow-")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(warm.SOCKET_VARIABLE, None)
    module, entry = args.stage.split(":")
    stage = [sys.executable, "-m", f"stages.{module}", entry]
    sweep = [sys.executable, "-m", "stages.sweep", args.sweep]
    cold, hot = [], []
    with stage_server.Server(env=env) as server:
        warm_env = {**env, warm.SOCKET_VARIABLE: server.address}
        timed(stage, workspace, env)  # one untimed run each: the page cache holds the libraries for both
        timed(stage, workspace, warm_env)
        for _ in range(args.rounds):
            cold.append(timed(stage, workspace, env))
            hot.append(timed(stage, workspace, warm_env))
    ray_folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    port = free_port()
    ray = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                    "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", ray_folder],
                   env=env, check=True, capture_output=True)
    try:
        ray_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        in_process, on_ray = [timed(sweep, workspace, env)], [timed(sweep, workspace, ray_env)]
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(ray_folder, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
    c, w = statistics.median(cold), statistics.median(hot)
    lines = [
        "# Stage start-up: cold vs warm, and a sweep in-process vs on Ray", "",
        f"Command: `python -m bench.stage_start <workspace> --stage {args.stage} --sweep {args.sweep} --rounds {args.rounds}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; nproc {os.cpu_count()}; load average at the end"
        f" {os.getloadavg()[0]:.2f}", "",
        "| measurement | wall s (median) | all runs | ratio |", "|---|---:|---|---:|",
        f"| `stages.{module} {entry}`, cold process | {c:.1f} | {' / '.join(f'{t:.1f}' for t in cold)} | 1.00 |",
        f"| `stages.{module} {entry}`, warm (forked from `transferlab.launch.warm`) | {w:.1f} | {' / '.join(f'{t:.1f}' for t in hot)}"
        f" | {w / c:.2f} |",
        f"| `stages.sweep {args.sweep}`, in-process | {in_process[0]:.1f} | {in_process[0]:.1f} | 1.00 |",
        f"| `stages.sweep {args.sweep}`, Ray head with 2 CPUs | {on_ray[0]:.1f} | {on_ray[0]:.1f} | {on_ray[0] / in_process[0]:.2f} |",
        "", f"Warm start saves {c - w:.1f} s per stage process.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
