"""The warm stage server: imports TensorFlow, Keras and MLflow once, then forks one process per stage.

The stage side and the launcher are `warm.py` (its docstring tells the whole design); this is the
other end of its socket. `python -m transferlab.launch.stage_server --serve ADDRESS IDLE_SECONDS` is how
`Server` starts one; `python -m transferlab.launch.warm -- COMMAND…` starts one around a command.

What keeps the fork equal to a cold start:
- the server imports third-party libraries only (`PRELOAD`); every `transferlab` and `stages`
  module is imported fresh in the fork, from the stage's own `sys.path`, so edited code is used;
- nothing is executed in TensorFlow before the fork (no eager context, no thread pools, no keras
  objects), so each fork initialises its own runtime as a cold process would;
- a stage whose interpreter, or whose environment variables read at import time (`TF_*`,
  `KERAS_*`, …), differ from the server's runs cold, in its own process, and says why on stderr.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transferlab.launch.warm import (
    CHILD_VARIABLE,
    receive_message,
    send_message,
    signal_quietly,
)

PRELOAD = ("tensorflow", "keras", "mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store",
           "sklearn.neural_network", "scipy.stats", "pandas", "matplotlib")
# Pure-Python caches the libraries fill on first use, filled once here so that no fork pays for them again. MLflow maps
# every installed distribution to its modules (importlib metadata of ~150 packages, 1.6 s) each time a stage logs
# a model, to check the model's requirements against the environment: a fork inherits the finished map. They run
# no TensorFlow and start no thread; what a stage computes with them is what a cold stage computes.
WARM_CACHES = (("mlflow.utils.requirements_utils", "_init_modules_to_packages_map"),)
IMPORT_TIME_PREFIXES = ("TF_", "KERAS_", "CUDA_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "XLA_", "PYTHONHASHSEED",
                        "PYTHONPATH", "MPLBACKEND")  # read when those libraries are imported, not later
PROJECT_PACKAGES = ("transferlab", "stages")
READY = b"ready\n"
IDLE_SECONDS = 1800  # a server nobody calls for this long exits (its launcher normally stops it first)


def import_time_environment(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key.startswith(IMPORT_TIME_PREFIXES)}


_STARTED_WITH: dict[str, str] = {}  # the server's import-time variables before PRELOAD
_SET_BY_PRELOAD: dict[str, str] = {}  # … and those the libraries set themselves while importing (KMP_*)


def _mismatch(request: dict[str, Any]) -> str | None:
    if request["executable"] != sys.executable:
        return f"interpreter {request['executable']} is not the server's {sys.executable}"
    wanted, have = import_time_environment(request["env"]), _STARTED_WITH

    def differs(key: str) -> bool:  # a value the libraries set on import is what a cold stage gets too
        return wanted.get(key) != have.get(key) and not (key in _SET_BY_PRELOAD and wanted.get(key) == _SET_BY_PRELOAD[key])

    differing = sorted(key for key in wanted.keys() | have.keys() if differs(key))
    if differing:
        return f"environment variables read at import differ: {', '.join(differing)}"
    return None


def _run_stage(request: dict[str, Any], fds: list[int]) -> None:
    """In the fork: become the stage process described by the request, run it, never return."""
    for number, fd in enumerate(fds):
        os.dup2(fd, number)
        os.close(fd)
    status = 1
    try:
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[CHILD_VARIABLE] = "1"
        sys.path[:] = request["path"]
        sys.argv[:] = request["argv"]
        for name in [name for name in sys.modules if name.split(".")[0] in PROJECT_PACKAGES]:
            del sys.modules[name]  # the server's own copy of this module: the stage imports its own
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
        import runpy

        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as done:
        code = done.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if not isinstance(code, (int, type(None))):
            print(code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - report as an uncaught exception would, then exit 1
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _serve_one(connection: socket.socket) -> None:
    """In a fork of the server, for one stage: fork the stage, relay its pid and status, watch the caller."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    _, fds, _, _ = socket.recv_fds(connection, 1, 3)
    request = receive_message(connection)
    reason = _mismatch(request)
    if reason:
        send_message(connection, {"cold": reason})
        return
    stage = os.fork()
    if stage == 0:
        connection.close()
        _die_with_parent()
        _run_stage(request, fds)
    for fd in fds:
        os.close(fd)
    send_message(connection, {"pid": stage})
    connection.setblocking(False)
    while True:
        done, status = os.waitpid(stage, os.WNOHANG)
        if done:
            break
        try:
            if connection.recv(1) == b"":  # the stage process is gone: end its fork too
                signal_quietly(stage, signal.SIGTERM)
        except BlockingIOError:
            pass
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    try:
        send_message(connection, {"status": code})
    except OSError:
        pass


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def serve(address: str, idle_seconds: float = IDLE_SECONDS) -> None:
    """Listen on the unix socket `address`, import PRELOAD, print READY on stdout, then fork per stage.

    Stages that connect while the imports run wait in the socket's queue.
    """
    import importlib

    _die_with_parent()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    _STARTED_WITH.update(import_time_environment(os.environ))
    for name in PRELOAD:
        importlib.import_module(name)
    for module, function in WARM_CACHES:
        fill = getattr(importlib.import_module(module), function, None)
        if fill is not None:  # a private helper of the library: gone in another version, the fork fills its own
            fill()
    after = import_time_environment(os.environ)
    _SET_BY_PRELOAD.update({key: value for key, value in after.items() if _STARTED_WITH.get(key) != value})
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks per stage are reaped by the kernel
    listener.settimeout(idle_seconds)
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    while True:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            return
        if os.fork() == 0:
            listener.close()
            try:
                _serve_one(connection)
            finally:
                os._exit(0)
        connection.close()


class Server:
    """A stage server in a child process, for the length of a `with` block (the launcher and the tests)."""

    def __init__(self, directory: Path | None = None, idle_seconds: float = IDLE_SECONDS,
                 env: dict[str, str] | None = None, wait: bool = True) -> None:
        """`wait`: return from `with` once the server has imported everything (False: at once; stages queue)."""
        self._env, self._wait = env, wait
        self._directory = tempfile.TemporaryDirectory(prefix="transferlab-warm-") if directory is None else None
        folder = Path(self._directory.name) if self._directory else directory
        self.address = str(folder / "stages.sock")
        self._idle_seconds = idle_seconds
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        self._process = subprocess.Popen(
            [sys.executable, "-m", "transferlab.launch.stage_server", "--serve", self.address, str(self._idle_seconds)],
            stdout=subprocess.PIPE if self._wait else subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=self._env,
        )
        if not self._wait:
            return self
        line = self._process.stdout.readline()
        if line != READY:
            self.__exit__()
            raise RuntimeError(f"the warm stage server did not start (exit {self._process.returncode})")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=30)
        if self._directory is not None:
            self._directory.cleanup()



def main(argv: list[str]) -> int:
    """`python -m transferlab.launch.stage_server --serve ADDRESS IDLE_SECONDS` (what `Server` runs)."""
    if argv[:1] != ["--serve"] or len(argv) != 3:
        print("usage: python -m transferlab.launch.stage_server --serve ADDRESS IDLE_SECONDS", file=sys.stderr)
        return 2
    serve(argv[1], float(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
