"""What DVC itself would choke on, refused before DVC parses or hashes anything.

`dvc repro` and `dvc status` read params.yaml and hash every dependency before the first stage
(`validate`, which refuses the same things) can run, so that stage's checks come too late for
what hangs or floods DVC itself (issue 26):

- **params.yaml's aliases** (`&anchor` / `*alias`): DVC loads params.yaml and flattens every value it
  tracks, so nested aliases ("billion laughs") expand exponentially (issue 26: DVC built about 6 GB
  from a small file). The YAML is *composed* here (a node graph: an alias is the node it names, nothing is
  expanded), with ruamel.yaml as DVC reads it, and the values it would expand to are counted over
  that graph; more than `MAX_YAML_VALUES` (the cap `config.loading` applies when a stage reads it),
  or an alias inside its own anchor, is refused. params.yaml must itself be a regular file.
- **files DVC hashes**: every dependency the pipeline files name literally (`data/raw`, `metrics`,
  `runs`, the code, …) and every `model_files.<name>.path`, walked without following links. A FIFO
  blocks DVC's read for ever, a device (or a link to `/dev/zero`) never ends, a socket cannot be
  read: each is refused, as is a link whose target is missing or lies outside its folder
  (`data/raw/` for what is in `data/raw/`, the repository for the rest: DVC would hash, and a stage
  read, `/etc/passwd` through it).

`python -m transferlab.launch.warm -- dvc repro` (`make run`, `make verify`) runs `check` before it
starts the command; `python -m transferlab.launch.preflight` runs it alone (before a plain `dvc
status`, say). A problem is one line (`error: <file>: <reason>`) and exit status 2; nothing is read
but params.yaml, the pipeline files and file metadata, so it takes milliseconds and imports no
TensorFlow. Plain `dvc repro`/`dvc status` run without it still hang on a FIFO: that is DVC's own
behaviour (docs/operations.md).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferlab.errors import TransferlabError
from transferlab.paths import PARAMS, PIPELINES, RAW_DATA, file_kind

MAX_YAML_VALUES = 100_000  # = config.loading.MAX_YAML_VALUES (tests/test_preflight.py); the default params hold ~400
MAX_PARAMS_BYTES = 10**7  # about 40 kB today
EXIT_REFUSED = 2  # as cli.EXIT_BAD_INPUT


class PreflightError(TransferlabError):
    """A file DVC would hang or flood on, named in one line."""


# --- params.yaml --------------------------------------------------------------------------------

def expanded_values(node: Any, cap: int = MAX_YAML_VALUES) -> int:
    """How many values a composed YAML node stands for once every alias is expanded (as `config.loading` counts
    them: every node, a mapping's values but not its keys), each node sized once; `cap + 1` once past `cap`.

    Raises ValueError for an alias inside its own anchor (it would expand for ever)."""
    if node is None:
        return 0
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(node, False)]
    while stack:  # depth-first, children before their parent, without recursion
        current, children_done = stack.pop()
        key = id(current)
        if key in sizes:
            continue
        children = _children(current)
        if not children_done:
            if key in on_path:
                raise ValueError("an alias inside its own anchor")
            on_path.add(key)
            stack.append((current, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        on_path.discard(key)
        sizes[key] = min(1 + sum(sizes[id(child)] for child in children), cap + 1)
    return sizes[id(node)]


def _children(node: Any) -> list[Any]:
    """A composed node's values: a sequence's items, a mapping's values (ruamel keeps (key, value) pairs)."""
    value = node.value
    if not isinstance(value, list):
        return []
    return [item[1] if isinstance(item, tuple) else item for item in value]


def check_params(root: Path) -> None:
    """params.yaml: a regular file of sane size whose aliases expand to at most MAX_YAML_VALUES values."""
    path = root / PARAMS
    if not os.path.lexists(path):
        return  # DVC (or validate) says so itself
    _check_entry(path, root, root, shown=PARAMS)
    size = path.stat().st_size
    if size > MAX_PARAMS_BYTES:
        raise PreflightError(f"{PARAMS}: {size:,} bytes, more than {MAX_PARAMS_BYTES:,}; refused before DVC reads it")
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text()
        if "&" not in text:  # no anchor, so no alias can expand anything
            return
        node = YAML(typ="safe").compose(text)
    except (OSError, UnicodeDecodeError, YAMLError):
        return  # unreadable or not YAML: the validate stage (or DVC) names the reason
    except RecursionError:
        raise PreflightError(f"{PARAMS}: nested too deep to parse; refused before DVC parses it") from None
    try:
        count = expanded_values(node)
    except ValueError as error:
        raise PreflightError(f"{PARAMS}: {error} (&anchor / *alias); refused before DVC expands it") from None
    if count > MAX_YAML_VALUES:
        raise PreflightError(f"{PARAMS}: expands to more than {MAX_YAML_VALUES:,} values through YAML aliases"
                             " (&anchor / *alias), which DVC would build in memory: write the values out")


# --- the files DVC hashes -----------------------------------------------------------------------

def dependencies(root: Path) -> list[Path]:
    """The paths DVC hashes before any stage runs: each pipeline file's literal deps, and the model files params name."""
    import yaml

    found: dict[Path, None] = {root / PARAMS: None, root / RAW_DATA: None}
    for pipeline in PIPELINES:
        try:
            stages = (yaml.safe_load((root / pipeline).read_text()) or {}).get("stages", {})
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # DVC says what is wrong with its own file
        for stage in stages.values():
            body = stage.get("do", stage) if isinstance(stage, dict) else {}
            for dep in body.get("deps", []) if isinstance(body, dict) else []:
                if isinstance(dep, str) and "${" not in dep:
                    found[root / dep] = None
    for spec in _model_files(root):
        path = spec.get("path") if isinstance(spec, dict) else None
        if isinstance(path, str) and path:
            found[root / path] = None
    return list(found)


def _model_files(root: Path) -> list[Any]:
    """`model_files.*` of params.yaml (the `${item.path}` deps of `model_file@<name>`); checked by `check_params` first."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        params = YAML(typ="safe").load((root / PARAMS).read_text())
    except (OSError, UnicodeDecodeError, YAMLError):
        return []
    entries = params.get("model_files") if isinstance(params, dict) else None
    return list(entries.values()) if isinstance(entries, dict) else []


def check_dependencies(root: Path) -> None:
    """Every dependency DVC hashes, and everything under a folder one, is a regular file, a folder, or a link to one
    inside its folder (data/raw for what lies there, the repository otherwise)."""
    for path in dependencies(root):
        if not os.path.lexists(path):
            continue  # a missing dependency is DVC's own one-line error (or a stage output not made yet)
        for entry in _walk(path):
            inside = root / RAW_DATA if entry != root / RAW_DATA and _within(entry, root / RAW_DATA) else root
            _check_entry(entry, inside, root)


def _walk(path: Path) -> Iterator[Path]:
    yield path
    if path.is_dir() and not path.is_symlink():
        for folder, names, files in os.walk(path):  # links are listed, never followed
            for name in sorted((*names, *files)):
                yield Path(folder) / name


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_entry(path: Path, inside: Path, root: Path, shown: Path | None = None) -> None:
    """Refuse what DVC cannot hash (or would hash from outside `inside`): one line naming `path`."""
    name = (shown or path.relative_to(root)).as_posix()
    where = "which DVC hashes before any stage runs"
    if path.is_symlink():
        real = Path(os.path.realpath(path))
        if not real.exists():
            raise PreflightError(f"{name}: a broken link (to {os.readlink(path)}), {where}: remove it")
        if not _within(real, Path(os.path.realpath(inside))):
            label = f"{inside.relative_to(root).as_posix()}/" if inside != root else "this repository"
            raise PreflightError(f"{name}: is a link to {real}, outside {label}, {where}: remove the link")
    try:
        kind = file_kind(path)  # the link's target, now known to lie inside
    except OSError as error:
        raise PreflightError(f"{name}: cannot be read ({error.strerror}), {where}") from None
    if kind not in (None, "a folder"):
        raise PreflightError(f"{name}: not a regular file ({kind}), {where}; refused, reading it could block or"
                             " never end: remove it")


def check(root: Path | str = ".") -> None:
    """Everything above, for the DVC project at `root`; raises PreflightError (one line) at the first problem."""
    root = Path(root).absolute()
    check_params(root)
    check_dependencies(root)


def refused(root: Path | str = ".") -> str | None:
    """`check` as the line to print (`error: …`), or None when DVC may start."""
    try:
        check(root)
    except PreflightError as error:
        from transferlab.errors import scrub

        return f"error: {scrub(' '.join(str(error).split()))}"
    return None


def main(argv: list[str]) -> int:
    if argv:
        print("usage: python -m transferlab.launch.preflight", file=sys.stderr)
        return EXIT_REFUSED
    line = refused()
    if line:
        print(line, file=sys.stderr)
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
