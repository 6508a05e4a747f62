"""Entry-point wrapper for stages: bad input becomes one line on stderr and a non-zero exit."""
from __future__ import annotations

import sys
from collections.abc import Callable

from transferlab.errors import TransferlabError

EXIT_BAD_INPUT = 2


def run_main(main: Callable[[list[str]], None], argv: list[str] | None = None) -> None:
    """Run a stage's `main(argv)`; a `TransferlabError` prints `error: <one line>` and exits 2."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except TransferlabError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
