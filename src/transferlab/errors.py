"""User-facing errors: each carries one line naming the key or file and the reason."""
from __future__ import annotations


class TransferlabError(Exception):
    """Bad input from the user (params, data files, model files); printed as one line, never a traceback."""


class ConfigError(TransferlabError):
    """A params.yaml value is missing, unknown or inconsistent; the message starts with its key path."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"params.yaml: {key}: {reason}")
        self.key = key


class DataError(TransferlabError):
    """A data file is missing, malformed or does not fit the params; the message names the file."""


class ModelError(TransferlabError):
    """A model file or registry entry is missing, unsafe or does not fit; the message names it."""


class TrackingError(TransferlabError):
    """The MLflow store cannot be reached or written; the message names it and what to do."""


class ClusterError(TransferlabError):
    """The Ray cluster named by RAY_ADDRESS cannot be reached, or lost a task; the message says which and why."""


class StageKilled(BaseException):
    """Raised in a stage process on SIGTERM, so the run ends KILLED (not RUNNING) and the stage says one line.

    A BaseException, like KeyboardInterrupt: `except Exception` in library code must not swallow it.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
