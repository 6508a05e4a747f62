"""Entry-point wrapper for stages: bad input becomes one line on stderr and a non-zero exit.

It also makes a stage behave under DVC: SIGTERM and Ctrl-C end it with one line (its MLflow run
is marked KILLED by `tracking`), and it dies with the `dvc` process that started it, so an orphan
never goes on to overwrite outputs a newer `dvc repro` has declared up to date.
"""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from transferlab.errors import STORAGE_ERRNOS, StageKilled, TransferlabError, scrub

EXIT_BAD_INPUT = 2
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def raise_killed(signum: int, _frame: Any) -> None:
    raise StageKilled(signal.Signals(signum).name)


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent (`dvc`, or the test runner) exits."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (another libc): keep running, as before
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_main(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's `main(argv)`; a `TransferlabError` prints `error: <one line>` and exits 2.

    SIGTERM / Ctrl-C print one line and exit 128 + the signal number, as a shell reports them.
    """
    if argv is None:  # a real process (python -m stages.…), not a test calling main in-process
        die_with_parent()
        # How the stage starts, not what it computes (tests/test_warm.py): imported here, not a DVC dependency
        from transferlab.launch import warm

        status = warm.delegate()  # run in the warm stage server when `transferlab.launch.warm` started one
        if status is not None:
            warm.exit_like(status)
        signal.signal(signal.SIGTERM, raise_killed)
    try:
        main(sys.argv[1:] if argv is None else argv)
    except TransferlabError as error:
        print(f"error: {scrub(' '.join(str(error).split()))}", file=sys.stderr)  # one line, no secret, whoever wrote it
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:  # a write outside `artifacts` (MLflow's artifact copy, a library's file) on a full disk
        if error.errno not in STORAGE_ERRNOS:
            raise
        where = scrub(str(error.filename)) if error.filename else "writing an output"
        print(f"error: {where}: {error.strerror}; nothing was recorded as done", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except StageKilled as killed:
        print(f"error: stopped by {killed.signal_name}; nothing was recorded as done", file=sys.stderr)
        sys.exit(128 + int(signal.Signals[killed.signal_name]))
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); nothing was recorded as done", file=sys.stderr)
        sys.exit(128 + int(signal.SIGINT))
