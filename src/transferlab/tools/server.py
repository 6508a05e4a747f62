"""A shared MLflow tracking server on PostgreSQL, run from the repository (`make server`, `make server-stop`).

    python -m transferlab.tools.server start [--dir .server] [--port 5001] [--pg-port 5433]
    python -m transferlab.tools.server status [--dir .server]
    python -m transferlab.tools.server stop [--dir .server]

`start` creates (once) a PostgreSQL cluster in `<dir>/pg` with Debian's `postgresql` binaries,
starts it on 127.0.0.1:<pg-port>, creates the database `mlflow`, and starts `mlflow server` on
127.0.0.1:<port> with that database as its backend store and `<dir>/artifacts` as its artifact
store (served through the server: clients need only its URL). Then point the pipeline at it:
`export MLFLOW_TRACKING_URI=http://127.0.0.1:<port>`. Both listen on the loopback only and the
cluster trusts local connections: a server for one machine (or an SSH tunnel); a team server
needs passwords, TLS and a real host. As root, PostgreSQL runs as the `postgres` user (it
refuses to run as root), so `<dir>` must be reachable by that user. No TensorFlow import.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from transferlab.errors import TransferlabError
from transferlab.launch.cli import run_main

DEFAULT_DIR = Path(".server")
DEFAULT_PORT = 5001  # `make ui` serves the local store on 5000
DEFAULT_PG_PORT = 5433  # beside a system cluster on 5432
DATABASE = "mlflow"
DB_USER = "transferlab"
START_TIMEOUT_S = 180  # a new database: MLflow creates its schema on first start
STOP_TIMEOUT_S = 20
GRACEFUL_S = 3  # what a request in flight gets to finish on stop


class ServerError(TransferlabError):
    """The server cannot be started or stopped; the message names what and why."""


@dataclass(frozen=True)
class Layout:
    """Where one server keeps its files (all under one ignored folder)."""

    root: Path

    @property
    def cluster(self) -> Path:
        return self.root / "pg"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def pg_log(self) -> Path:
        return self.root / "pg.log"

    @property
    def mlflow_log(self) -> Path:
        return self.root / "mlflow.log"

    @property
    def mlflow_pid(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def uri_file(self) -> Path:
        return self.root / "tracking_uri"


def backend_uri(pg_port: int) -> str:
    return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{pg_port}/{DATABASE}"  # SQLAlchemy 2.1 would pick psycopg 3


def postgres_binary(name: str) -> Path:
    """A PostgreSQL program: on PATH, else the newest `/usr/lib/postgresql/<version>/bin` (Debian keeps them there)."""
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(Path(path).parts[-3]))
    if not candidates:
        raise ServerError(f"PostgreSQL's {name} not found: install Debian's postgresql package (apt-get install postgresql)")
    return Path(candidates[-1])


def _as_cluster_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its server programs as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise ServerError(f"{what} failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result.stdout


def init_cluster(layout: Layout) -> None:
    """Create the cluster once: one superuser, trusted on the loopback only."""
    if (layout.cluster / "PG_VERSION").is_file():
        return
    layout.cluster.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(layout.cluster, "postgres", "postgres")
        probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(layout.cluster)], capture_output=True)
        if probe.returncode != 0:
            raise ServerError(f"{layout.cluster}: the postgres user cannot reach it (a parent folder is private): use --dir elsewhere")
    _run(_as_cluster_owner([str(postgres_binary("initdb")), "-D", str(layout.cluster.resolve()), "-U", DB_USER,
                            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]), f"initdb {layout.cluster}")


def start_postgres(layout: Layout, pg_port: int) -> None:
    cluster = str(layout.cluster.resolve())
    if os.geteuid() == 0:
        layout.pg_log.touch()
        shutil.chown(layout.pg_log, "postgres", "postgres")
    options = f"-c listen_addresses=127.0.0.1 -p {pg_port} -k {cluster}"  # the socket stays in the cluster folder
    logged = layout.pg_log.stat().st_size if layout.pg_log.exists() else 0
    try:
        _run(_as_cluster_owner([str(postgres_binary("pg_ctl")), "-D", cluster, "-l", str(layout.pg_log.resolve()),
                                "-o", options, "-w", "-t", "60", "start"]), f"PostgreSQL on 127.0.0.1:{pg_port}")
    except ServerError:  # pg_ctl only says "examine the log output": say what the log says
        raise ServerError(f"PostgreSQL on 127.0.0.1:{pg_port} did not start: {_log_error(layout.pg_log, logged)} "
                          f"(log: {layout.pg_log})") from None
    created = subprocess.run([str(postgres_binary("createdb")), "-h", "127.0.0.1", "-p", str(pg_port), "-U", DB_USER, DATABASE],
                             capture_output=True, text=True, timeout=60)
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise ServerError(f"createdb {DATABASE} failed: {created.stderr.strip()}")


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_mlflow(layout: Layout, port: int, pg_port: int) -> str:
    """Start `mlflow server` in the background; returns its URI once it answers /health."""
    uri = f"http://127.0.0.1:{port}"
    if _healthy(uri):
        raise ServerError(f"{uri} already answers: stop that server or choose another --port")
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri(pg_port),
               "--artifacts-destination", str(layout.artifacts.resolve()), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--uvicorn-opts", f"--timeout-graceful-shutdown {GRACEFUL_S}"]  # idle keep-alive clients hold it open
    # MLflow 3 also starts a GenAI job runner (seven more MLflow processes) on a database store: not used here
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    with layout.mlflow_log.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    layout.mlflow_pid.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"mlflow server exited ({process.returncode}): {_last_line(layout.mlflow_log)} (log: {layout.mlflow_log})")
        if _healthy(uri):
            layout.uri_file.write_text(uri + "\n")
            return uri
        time.sleep(0.5)
    _stop_mlflow(layout)
    raise ServerError(f"mlflow server did not answer {uri}/health within {START_TIMEOUT_S} s (log: {layout.mlflow_log})")


def _log_error(path: Path, offset: int) -> str:
    """The first FATAL or ERROR line PostgreSQL logged after `offset`, else its last line."""
    with path.open("rb") as log:
        log.seek(offset)
        lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    failures = [line for line in lines if "FATAL:" in line or "ERROR:" in line]
    return (failures or lines or ["no output"])[0][:300]


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    return lines[-1][:300] if lines else "no output"


def start(layout: Layout, port: int = DEFAULT_PORT, pg_port: int = DEFAULT_PG_PORT) -> str:
    """PostgreSQL, then MLflow on it; returns the tracking URI. A failure leaves nothing running."""
    if _postgres_running(layout) or _mlflow_pid(layout) is not None:
        raise ServerError(f"a server is already running from {layout.root}: stop it first (make server-stop)")
    layout.root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        layout.root.chmod(layout.root.stat().st_mode | 0o011)  # the postgres user must traverse it
    init_cluster(layout)
    start_postgres(layout, pg_port)
    try:
        return start_mlflow(layout, port, pg_port)
    except BaseException:
        stop_postgres(layout)
        raise


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child, not yet reaped) is gone for every purpose here
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _is_mlflow(pid: int) -> bool:
    """Is `pid` still the server we started (not a later process that reused its number)?"""
    try:
        return b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _mlflow_pid(layout: Layout) -> int | None:
    """The pid of the MLflow server started from `layout`, if it still runs."""
    if not layout.mlflow_pid.is_file():
        return None
    pid = int(layout.mlflow_pid.read_text().strip())
    return pid if _process_alive(pid) and _is_mlflow(pid) else None


def _postgres_running(layout: Layout) -> bool:
    if not (layout.cluster / "postmaster.pid").is_file():
        return False
    status = subprocess.run(_as_cluster_owner([str(postgres_binary("pg_ctl")), "-D", str(layout.cluster.resolve()), "status"]),
                            capture_output=True, timeout=60)
    return status.returncode == 0


def _stop_mlflow(layout: Layout) -> bool:
    """Stop the server's process group (MLflow runs its web workers as children); True if one was running."""
    pid = _mlflow_pid(layout)
    layout.mlflow_pid.unlink(missing_ok=True)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _process_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


def stop_postgres(layout: Layout) -> bool:
    if not _postgres_running(layout):
        return False
    _run(_as_cluster_owner([str(postgres_binary("pg_ctl")), "-D", str(layout.cluster.resolve()), "-m", "fast", "-w", "stop"]),
         f"stopping PostgreSQL in {layout.cluster}")
    return True


def stop(layout: Layout) -> list[str]:
    """Stop MLflow, then PostgreSQL; returns what was stopped. The data stay for the next start."""
    stopped = ["mlflow server"] if _stop_mlflow(layout) else []
    return stopped + (["PostgreSQL"] if stop_postgres(layout) else [])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m transferlab.tools.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "status", "stop"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the cluster, artifacts and logs live (default: .server)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the MLflow server's port (default: 5001)")
    parser.add_argument("--pg-port", type=int, default=DEFAULT_PG_PORT, help="PostgreSQL's port (default: 5433)")
    args = parser.parse_args(argv)
    layout = Layout(args.dir)
    if args.action == "start":
        uri = start(layout, args.port, args.pg_port)
        print(f"MLflow server {uri} on {backend_uri(args.pg_port)}, artifacts in {layout.artifacts} (logs: {layout.root}/*.log)")
        print(f"export MLFLOW_TRACKING_URI={uri}")
    elif args.action == "status":
        uri = layout.uri_file.read_text().strip() if layout.uri_file.is_file() else None
        print(f"mlflow server: {uri + (' answers' if _healthy(uri) else ' does not answer') if uri else 'never started here'}")
        print(f"PostgreSQL: {'running' if _postgres_running(layout) else 'stopped'} ({layout.cluster})")
    else:
        stopped = stop(layout)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


if __name__ == "__main__":
    run_main(main)
