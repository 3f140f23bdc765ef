"""Terminal output: one console, progress bars with items/s and ETA, and the end-of-stage summary."""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True, highlight=False)


class RateColumn(TextColumn):
    """items/s of the task (rich's own speed column is for bytes)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f} it/s" if speed else "- it/s"


def quiet() -> bool:
    """LVD_QUIET=1: no progress output at all (tests, scripts that parse the output)."""
    return os.environ.get("LVD_QUIET") == "1"


def progress() -> Progress:
    """A progress display: description, bar, n/total, %, items/s, elapsed, ETA (hidden when
    stderr is not a terminal or LVD_QUIET=1)."""
    hidden = quiet() or not sys.stderr.isatty()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=hidden,
        transient=False,
    )


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, bool):
        out.append((prefix, "yes" if value else "no"))
    elif isinstance(value, float):
        out.append((prefix, f"{value:,.4g}"))
    elif isinstance(value, int):
        out.append((prefix, f"{value:,}"))
    else:
        out.append((prefix, str(value)))


def print_summary(title: str, rows: Mapping[str, Any], max_rows: int = 40) -> None:
    """A one-screen summary table of nested stats."""
    flat: list[tuple[str, str]] = []
    _flatten("", rows, flat)
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="cyan")
    table.add_column("value", justify="right")
    for name, value in flat[:max_rows]:
        table.add_row(name, value)
    if len(flat) > max_rows:
        table.add_row("…", f"{len(flat) - max_rows} more in manifest.json")
    console.print(table)
