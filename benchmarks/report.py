"""One benchmark table, written as JSON and markdown after every row (so a run killed at its
time limit keeps what it measured), and a deadline shared by a benchmark's loops.

JSON: {"title", "meta": {...}, "columns": [...], "rows": [{column: value}, ...]}; the markdown
file holds the same table. gpu_suite_summary.py reads the JSON files back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def commit() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


class Table:
    """Rows of one benchmark; `add` rewrites both files at once (each is small)."""

    def __init__(self, title: str, columns: list[str], json_path: str | None, md_path: str | None,
                 meta: dict[str, Any] | None = None) -> None:
        self.title, self.columns, self.meta = title, columns, dict(meta or {})
        self.json_path, self.md_path = json_path, md_path
        self.rows: list[dict[str, Any]] = []
        self.write()

    def add(self, **row: Any) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"{self.title}: columns {sorted(unknown)} not in {self.columns}")
        self.rows.append({c: row.get(c) for c in self.columns})
        self.write()

    def note(self, key: str, value: Any) -> None:
        self.meta[key] = value
        self.write()

    def markdown(self) -> str:
        meta = "; ".join(f"{k} {v}" for k, v in self.meta.items())
        lines = [f"## {self.title}", "", meta, "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(_cell(r[c]) for c in self.columns) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        for path, text in ((self.json_path, lambda: json.dumps(
                {"title": self.title, "meta": self.meta, "columns": self.columns, "rows": self.rows}, indent=1)),
                           (self.md_path, self.markdown)):
            if path:
                tmp = f"{path}.tmp"
                Path(tmp).write_text(text())
                os.replace(tmp, path)

    def print(self) -> None:
        print("\n" + self.markdown(), flush=True)


class Deadline:
    """Seconds left of a benchmark's budget (None: no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()

    def passed(self, reserve: float = 0.0) -> bool:
        return self.left() <= reserve
