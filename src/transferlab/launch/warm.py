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
- the server imports third-party libraries only (`stage_server.PRELOAD`); every `transferlab` and `stages`
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

This module is the launcher (`main`) and the stage side (`handover`, `delegate`: what `stages/__init__`
and `cli` call); the server itself, and what keeps a fork equal to a cold start, is `stage_server.py`.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

SOCKET_VARIABLE = "TRANSFERLAB_WARM_SOCKET"
CHILD_VARIABLE = "TRANSFERLAB_WARM_CHILD"  # set in the fork: its run_main runs the stage in-process
# loaded, these import none of the server's PRELOAD (tests/test_warm.py); data.py reaches keras, scikit-learn or
# SciPy only for the datasets that need them
COLD_STAGES = ("stages.validate", "stages.prepare_source", "stages.prepare_target")
CONNECT_SECONDS = 2.0  # a launcher's server binds its socket within moments of starting (DVC takes longer)


# --- the wire: length-prefixed JSON messages, both sides ------------------------------------------

def send_message(connection: socket.socket, message: dict[str, Any]) -> None:
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


def receive_message(connection: socket.socket) -> dict[str, Any]:
    (size,) = struct.unpack("!Q", _receive_exactly(connection, 8))
    return json.loads(_receive_exactly(connection, size))


def signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


# --- the stage side -----------------------------------------------------------------------------

def _stage_module() -> str | None:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec is not None else None



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
            send_message(connection, {
                "module": module, "argv": argv or sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
                "executable": sys.executable, "umask": _umask(),
            })
            reply = receive_message(connection)
        except (EOFError, OSError):
            print(f"note: warm stage server {address} closed before it answered; running cold", file=sys.stderr)
            return None
        if "cold" in reply:
            print(f"note: warm stage server not used: {reply['cold']}; running cold", file=sys.stderr)
            return None
        stage_pid = int(reply["pid"])
        forward = lambda signum, _frame: signal_quietly(stage_pid, signum)  # noqa: E731
        previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            while True:
                try:
                    return int(receive_message(connection)["status"])
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


def exit_like(status: int) -> None:
    """Leave this process as the stage ended: with its exit code, or killed by its signal."""
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)



# --- the launcher -------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """`python -m transferlab.launch.warm -- COMMAND…`: run COMMAND with a stage server alive."""
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: python -m transferlab.launch.warm -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    # before DVC parses params.yaml or hashes a dependency: what would hang or flood DVC itself (issue 26)
    from transferlab import paths
    from transferlab.launch import preflight

    refused = preflight.refused() if any(path.exists() for path in paths.PIPELINES) else None
    if refused:
        print(refused, file=sys.stderr)
        return preflight.EXIT_REFUSED
    # the server's side, imported only where one is started
    from transferlab.launch.stage_server import Server

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
