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
