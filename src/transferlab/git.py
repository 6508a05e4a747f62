"""git's output for the library: one home for the report's look back at the committed run and for `verify`.

Two ways to fail: `git` raises a `TransferlabError` naming the command (for tools that cannot go on
without the commit), `git_or_none` answers None (for the report, which then leaves a section out).
"""
from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from transferlab.errors import TransferlabError

TIMEOUT_S = 60  # a tool waits for git this long
QUICK_TIMEOUT_S = 10  # a report does not wait on git longer than this


def git(args: Sequence[str], repo: Path, timeout: float = TIMEOUT_S) -> str:
    """git's standard output; a missing git or a failing command raises one line naming it."""
    try:
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=timeout, check=False)
    except OSError as error:
        raise TransferlabError(f"git: {error.strerror}") from None
    if result.returncode != 0:
        raise TransferlabError(f"git {' '.join(args)}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'failed'}")
    return result.stdout


def git_or_none(args: Sequence[str], repo: Path, timeout: float = QUICK_TIMEOUT_S) -> str | None:
    """git's standard output, or None when git is missing, fails or hangs."""
    try:
        result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None
