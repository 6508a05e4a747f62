"""User-facing errors: each carries one line naming the key or file and the reason.

Also the one scrubber of those lines: a URI may carry a password (`http://alice:pw@host`) or a
token in its query string, and an error line quotes URIs, its own and the text a library appends.
"""
from __future__ import annotations

import errno
import os
import re
import urllib.parse

# `scheme://userinfo@` anywhere in a line: the userinfo goes, whatever it holds (user:password, a token)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]*@")
# a query string after a URL's host or path (`?token=…`, `?sig=…`): its values may be secrets
_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s#'\"<>)]*")
# a query string after a bare path, as HTTP clients quote the request (`with url: /api/…?token=…`)
_PATH_QUERY = re.compile(r"(?<![\w:/])(/[^\s?#'\"<>]*)\?[^\s#'\"<>)]*")
HIDDEN = "***"
# where MLflow takes credentials from: their values are hidden even where no URL pattern frames them
SECRET_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def _known_secrets() -> list[str]:
    """The credential values in MLflow's variables, longest first (short ones would hide ordinary words)."""
    found = []
    for name in SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if name != "MLFLOW_TRACKING_URI":
            found.append(value)
            continue
        parts = urllib.parse.urlsplit(value)
        if parts.scheme in ("sqlite", "file", ""):  # a local store's `?mode=ro&uri=true` holds no secret
            continue
        found += [parts.password or "", parts.query, *(v for _, v in urllib.parse.parse_qsl(parts.query))]
        if parts.username and parts.password is None:  # `https://<token>@host`
            found.append(parts.username)
    return sorted({secret for secret in found if len(secret) >= 6}, key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` with every URL's userinfo and query string, and the credentials MLflow reads from the
    environment, replaced by `***`."""
    text = _PATH_QUERY.sub(rf"\1?{HIDDEN}", _QUERY.sub(rf"\1?{HIDDEN}", _USERINFO.sub(rf"\1{HIDDEN}@", text)))
    for secret in _known_secrets():
        text = text.replace(secret, HIDDEN)
    return text


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one scrubbed line: the first line of its message (its type's name when it has
    none), whitespace collapsed, cut at `limit` characters."""
    error = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error (and appends the SQL)
    lines = [" ".join(line.split()) for line in str(error).splitlines() if line.strip()]
    return scrub(lines[0] if lines else type(error).__name__)[:limit]


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


class OutputError(TransferlabError):
    """An output cannot be written (a full disk, a quota, a read-only file system); the message names it."""


# what a write fails with when the storage, not the program, is at fault
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


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
