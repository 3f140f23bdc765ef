"""Turn typer options into Hydra override strings (options are sugar for `key=value`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        return _quote(str(value))
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if value is None:
        return "null"
    raise TypeError(f"cannot express {value!r} as an override")


def sugar(**options: Any) -> list[str]:
    """`sugar(**{"ingest.threads": 8, "out": None})` -> ["ingest.threads=8"]; None and empty lists are skipped."""
    out = []
    for key, value in options.items():
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        out.append(f"{key}={format_value(value)}")
    return out


def carried(config: dict[str, Any], keys: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[str]:
    """Overrides that repeat another run's values: `keys` are sections ("model") or dotted keys
    ("optim.layerwise_decay") of its resolved config; `skip` leaves dotted keys out. None values
    are carried as null; nested mappings (e.g. lists of resolutions) are not carried."""
    out = []
    for key in keys:
        section, _, name = key.partition(".")
        values = config.get(section)
        if not isinstance(values, dict):
            continue
        items = [(name, values[name])] if name else list(values.items())
        for child, value in items:
            full = f"{section}.{child}"
            if full in skip or isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value)):
                continue
            if name and child not in values:
                continue
            out.append(f"{full}={format_value(value)}")
    return out


def last_value(overrides: list[str], key: str) -> str | None:
    """The value the last `key=...` override gives (quotes stripped), or None."""
    found = None
    for item in overrides:
        name, sep, value = item.partition("=")
        if sep and name.lstrip("+~") == key:
            found = value
    if found is not None and len(found) >= 2 and found[0] == found[-1] and found[0] in "'\"":
        found = found[1:-1].replace("\\'", "'").replace("\\\\", "\\")
    return found
