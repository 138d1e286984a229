"""Strict YAML presets shipped in `xlstm_ts.configs/<folder>/`: listing, reading by name or path, key checks."""

from __future__ import annotations

import dataclasses
import difflib
from importlib import resources
from pathlib import Path

import yaml


def shipped_presets(folder: str) -> list[str]:
    """Names of the presets in configs/<folder>/ (file names without `.yaml`)."""
    root = resources.files("xlstm_ts.configs") / folder
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_preset(folder: str, kind: str, name_or_path: str | Path) -> tuple[dict, str]:
    """(mapping, source) of a shipped preset name or a YAML file path; `kind` names the preset type in errors."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ValueError(f"{kind.capitalize()} file {str(path)!r} does not exist; pass an existing .yaml file "
                             f"or one of the shipped presets {shipped_presets(folder)}.")
        text, source = path.read_text(), str(path)
    else:
        names = shipped_presets(folder)
        if str(name_or_path) not in names:
            close = difflib.get_close_matches(str(name_or_path), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown {kind} preset {str(name_or_path)!r}.{hint} Available presets: {names}, or a "
                             ".yaml path.")
        text = (resources.files("xlstm_ts.configs") / folder / f"{name_or_path}.yaml").read_text()
        source = f"configs/{folder}/{name_or_path}.yaml"
    return yaml.safe_load(text) or {}, source


def check_keys(data: object, cls: type, source: str) -> None:
    """Refuse a non-mapping, and keys that are not fields of the dataclass `cls` (with a suggestion)."""
    if not isinstance(data, dict):
        raise ValueError(f"Expected a mapping of {cls.__name__} fields in {source}, got {type(data).__name__}.")
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Valid keys: {sorted(fields)}."
            raise ValueError(f"Unknown key {key!r} in {cls.__name__} ({source}).{hint}")
