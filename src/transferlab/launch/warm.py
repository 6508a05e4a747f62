"""A warm start for stage processes: TensorFlow and MLflow imported once per `dvc repro`, not per stage.

Every stage is its own process, as DVC wants, and each used to spend ~15 s importing TensorFlow,
Keras and MLflow before doing a second of work — half of `make run`. `python -m transferlab.launch.warm --
dvc repro` starts a *stage server* that imports those libraries once (and nothing of this project),
then runs the command with `TRANSFERLAB_WARM_SOCKET` set. A stage process (`python -m stages.x`,
through `cli.run_main`) hands its argv, cwd, environment, `sys.path` and its stdin/stdout/stderr to
the server; the server forks, and the fork runs the stage module as `__main__` with exactly those.
The stage's output goes to DVC's terminal, its exit status comes back to the stage process, and
signals sent to the stage process are forwarded to the fork.

What keeps the fork equal to a cold start:
- the server imports third-party libraries only (`PRELOAD`); every `transferlab` and `stages`
  module is imported fresh in the fork, from the stage's own `sys.path`, so edited code is used;
- nothing is executed in TensorFlow before the fork (no eager context, no thread pools, no keras
  objects), so each fork initialises its own runtime as a cold process would;
- a stage whose interpreter, or whose environment variables read at import time (`TF_*`,
  `KERAS_*`, …), differ from the server's runs cold, in its own process, and says why on stderr.
`tests/test_warm.py` checks that a warm stage writes the same metrics as a cold one.

The launcher starts the command at once, while the server is still importing: the server listens
first and imports after, so a stage that connects early waits in the queue for it. The stages that
import none of those libraries (`COLD_STAGES`: validate and prepare, the first ones DVC runs) run
cold instead, so they never wait; a fork would save them nothing.

Without the variable (plain `dvc repro`) or when the server cannot be reached, stages run cold.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SOCKET_VARIABLE = "TRANSFERLAB_WARM_SOCKET"
CHILD_VARIABLE = "TRANSFERLAB_WARM_CHILD"  # set in the fork: its run_main runs the stage in-process
PRELOAD = ("tensorflow", "keras", "mlflow", "mlflow.tracking", "mlflow.store.tracking.sqlalchemy_store",
           "sklearn.neural_network", "scipy.stats", "pandas", "matplotlib")
IMPORT_TIME_PREFIXES = ("TF_", "KERAS_", "CUDA_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "XLA_", "PYTHONHASHSEED",
                        "PYTHONPATH", "MPLBACKEND")  # read when those libraries are imported, not later
PROJECT_PACKAGES = ("transferlab", "stages")
# loaded, these import none of PRELOAD (tests/test_warm.py); data.py reaches keras, scikit-learn or SciPy only for
# the datasets that need them
COLD_STAGES = ("stages.validate", "stages.prepare_source", "stages.prepare_target")
CONNECT_SECONDS = 2.0  # a launcher's server binds its socket within moments of starting (DVC takes longer)
READY = b"ready\n"
IDLE_SECONDS = 1800  # a server nobody calls for this long exits (its launcher normally stops it first)


# --- the stage side -----------------------------------------------------------------------------

def import_time_environment(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key.startswith(IMPORT_TIME_PREFIXES)}


def _stage_module() -> str | None:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else None


def _send(connection: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    connection.sendall(struct.pack("!Q", len(data)) + data)


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = connection.recv(size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _receive(connection: socket.socket) -> dict[str, Any]:
    (size,) = struct.unpack("!Q", _receive_exactly(connection, 8))
    return json.loads(_receive_exactly(connection, size))


_ASKED = False  # has this process already offered itself to the server?


def handover() -> None:
    """From `stages/__init__`, before the stage module and its imports load: run `python -m stages.x …` warm.

    Exits this process with the stage's status when the server ran it; returns (to run cold) otherwise.
    """
    if "-m" not in sys.orig_argv or not os.environ.get(SOCKET_VARIABLE) or os.environ.get(CHILD_VARIABLE):
        return
    at = sys.orig_argv.index("-m")
    module, argv = sys.orig_argv[at + 1], sys.orig_argv[at + 1 :]
    if module.split(".")[0] != "stages":  # e.g. `python -m pytest` importing a stage module in-process
        return
    from transferlab.launch.cli import die_with_parent

    die_with_parent()
    status = delegate(module, argv)
    if status is not None:
        exit_like(status)


def delegate(module: str | None = None, argv: list[str] | None = None) -> int | None:
    """Run this stage process's module (or `module` with `argv`) in the warm server; its exit status, or None to run cold.

    A negative status -N means the stage was ended by signal N.
    """
    global _ASKED
    address = os.environ.get(SOCKET_VARIABLE)
    module = module or _stage_module()
    if not address or os.environ.get(CHILD_VARIABLE) or module is None or _ASKED or module in COLD_STAGES:
        return None
    _ASKED = True  # once per process: a stage the server turned away (stages/__init__) is not offered again by run_main
    try:
        connection = _connect(address)
    except OSError as error:
        print(f"note: warm stage server {address} unreachable ({error.strerror or error}); running cold",
              file=sys.stderr)
        return None
    with connection:
        try:  # a server still importing answers once it is ready
            socket.send_fds(connection, [b"F"], [0, 1, 2])
            _send(connection, {
                "module": module, "argv": argv or sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
                "executable": sys.executable, "umask": _umask(),
            })
            reply = _receive(connection)
        except (EOFError, OSError):
            print(f"note: warm stage server {address} closed before it answered; running cold", file=sys.stderr)
            return None
        if "cold" in reply:
            print(f"note: warm stage server not used: {reply['cold']}; running cold", file=sys.stderr)
            return None
        stage_pid = int(reply["pid"])
        forward = lambda signum, _frame: _signal_quietly(stage_pid, signum)  # noqa: E731
        previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            while True:
                try:
                    return int(_receive(connection)["status"])
                except InterruptedError:
                    continue
                except (EOFError, ConnectionError):
                    print(f"error: the warm stage server {address} lost stage process {stage_pid}", file=sys.stderr)
                    return 1
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _connect(address: str) -> socket.socket:
    """Connect to the server's socket, waiting up to CONNECT_SECONDS for a server that has not bound it yet."""
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(address)
            return connection
        except (FileNotFoundError, ConnectionRefusedError):
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def exit_like(status: int) -> None:
    """Leave this process as the stage ended: with its exit code, or killed by its signal."""
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


# --- the server side ----------------------------------------------------------------------------

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
    request = _receive(connection)
    reason = _mismatch(request)
    if reason:
        _send(connection, {"cold": reason})
        return
    stage = os.fork()
    if stage == 0:
        connection.close()
        _die_with_parent()
        _run_stage(request, fds)
    for fd in fds:
        os.close(fd)
    _send(connection, {"pid": stage})
    connection.setblocking(False)
    while True:
        done, status = os.waitpid(stage, os.WNOHANG)
        if done:
            break
        try:
            if connection.recv(1) == b"":  # the stage process is gone: end its fork too
                _signal_quietly(stage, signal.SIGTERM)
        except BlockingIOError:
            pass
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    try:
        _send(connection, {"status": code})
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
            [sys.executable, "-m", "transferlab.launch.warm", "--serve", self.address, str(self._idle_seconds)],
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
    """`python -m transferlab.launch.warm -- COMMAND…`: run COMMAND with a stage server alive."""
    if argv[:1] == ["--serve"]:
        serve(argv[1], float(argv[2]))
        return 0
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python -m transferlab.launch.warm -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    with Server(wait=False) as server:  # the command starts while the server imports (`serve`)
        environment = {**os.environ, SOCKET_VARIABLE: server.address}
        environment.pop(CHILD_VARIABLE, None)
        process = subprocess.Popen(command, env=environment)
        while True:
            try:
                status = process.wait()
                return status if status >= 0 else 128 - status
            except KeyboardInterrupt:  # the terminal sent SIGINT to the whole group: let the command end
                continue


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
