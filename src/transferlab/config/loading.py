"""Reading params.yaml: the YAML as DVC reads it, guarded against alias bombs; parsing it into `Params`
with pydantic's errors turned into one line naming the key; the entry a `foreach` stage runs.

params.yaml is read exactly as DVC reads it (ruamel.yaml, YAML 1.2), so the value a stage uses is
the value `dvc.lock` records: PyYAML (YAML 1.1) would read `seed: 010` as 8 and `1:30` as 90.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from transferlab.config.checks import check_consistency, check_name
from transferlab.config.inputs import PRETRAIN_METHODS, ZOO_KINDS
from transferlab.config.schema import SWEEP_KINDS, Params
from transferlab.errors import ConfigError


def _format_validation_error(error: ValidationError) -> ConfigError:
    first = error.errors()[0]
    loc = [part for part in first["loc"] if not (isinstance(part, str) and "[" in part)]  # pydantic's union member names
    if len(loc) > 2 and loc[0] in ("pretrain", "zoo", "sweeps") and loc[2] in (*PRETRAIN_METHODS, *ZOO_KINDS, *SWEEP_KINDS):
        del loc[2]  # pydantic names the union member it tried; the user wrote no such key
    key = ".".join(str(part) for part in loc) or "(top level)"
    reason = first["msg"]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = first.get("ctx", {}).get("discriminator", "'method'").strip("'")
        key += f".{tag}"
        found = first.get("ctx", {}).get("tag")
        tags = {"pretrain": PRETRAIN_METHODS, "zoo": ZOO_KINDS, "sweeps": SWEEP_KINDS}.get(str(loc[0]), ())
        choices = first.get("ctx", {}).get("expected_tags", ", ".join(tags)).replace("'", "")
        reason = f"{found!r} is not one of" if found else "missing; one of"
        reason += f" {choices}"
    elif first["type"] == "extra_forbidden":
        reason = "unknown key"
    elif first["type"] == "literal_error":
        reason = f"{first.get('input')!r}: {first['msg'].lower()}"
    elif "input" in first and not isinstance(first["input"], dict):
        reason = f"{first['input']!r}: {reason.lower()}"
    return ConfigError(key, reason)


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`, or raise a one-line ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError("(top level)", "params.yaml must be a mapping of sections")
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise _format_validation_error(error) from None
    check_consistency(params)
    return params


def stage_entry(argv: list[str], params: Params, *sections: str, usage: str) -> tuple[str, str]:
    """The one entry a `foreach` stage runs (`python -m stages.<stage> <name>`), as (section, name)."""
    if len(argv) != 1:
        raise ConfigError(sections[0], f"usage: {usage}")
    name = argv[0]
    check_name(f"{sections[0]}.{name}", name)
    for section in sections:
        if name in getattr(params, section):
            return section, name
    have = [entry for section in sections for entry in getattr(params, section)]
    raise ConfigError(f"{sections[0]}.{name}", f"not configured (have: {', '.join(have) or 'none'})")


def read_yaml(path: Path | str = "params.yaml") -> Any:
    """params.yaml as DVC reads it (ruamel.yaml's safe loader, YAML 1.2): one meaning for both."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("(file)", f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("(file)", f"{path} cannot be read ({error})") from None
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as error:  # also duplicate keys, which PyYAML silently resolved to the last one
        reason = " ".join(str(error).split())[:300]
        raise ConfigError("(file)", f"{path} is not valid YAML: {reason}") from None
    if _expanded_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ConfigError("(file)", f"{path} expands to more than {MAX_YAML_VALUES:,} values through YAML aliases"
                                    " (&anchor / *alias): write the values out")
    return data


# A YAML alias shares a node; schema checks, MLflow params and DVC's hashing expand it. Nested
# aliases grow exponentially ("billion laughs"): count what they expand to, stopping at the cap.
MAX_YAML_VALUES = 100_000  # the default params.yaml holds about 400


def _expanded_values(data: Any, cap: int) -> int:
    """How many values `data` holds once every alias is expanded, counted up to just past `cap`."""
    count, stack = 0, [data]
    while stack and count <= cap:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def load_params(path: Path | str = "params.yaml") -> Params:
    return parse_params(read_yaml(path))
