"""Terminal output: one console, the progress display and the end-of-stage summary.

`progress()` is a live bar on a terminal and plain lines elsewhere (SLURM, nohup, CI log files),
with the same numbers: n/total, %, items/s, elapsed, ETA. Stages use rich's Progress API
(add_task / advance / update, as a context manager) plus three optional task fields:
`shards` (the task's shard count) and `shards_done` (updated as shards finish: a plain line per
shard), `detail` (a second line on a terminal, appended to the plain line) and, in update,
`line=True` (print the plain line now: training's log_every). Without a terminal a task also
prints at most every LVD_LOG_INTERVAL_S seconds (default 30; its `line_every_s` field
overrides, 0: never by time), so a long shard still shows that it moves.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Mapping

from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.padding import Padding
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column, Table
from rich.text import Text

console = Console(stderr=True, highlight=False)

BAR_WIDTH = 20
MIN_DESCRIPTION = 16  # columns the description keeps before the bar, % and elapsed make room
DEFAULT_LINE_EVERY_S = 30.0


def quiet() -> bool:
    """LVD_QUIET=1: no progress output at all (tests, scripts that parse the output)."""
    return os.environ.get("LVD_QUIET") == "1"


def line_every_s() -> float:
    value = os.environ.get("LVD_LOG_INTERVAL_S", "")
    try:
        return float(value) if value else DEFAULT_LINE_EVERY_S
    except ValueError:
        return DEFAULT_LINE_EVERY_S


# ---- the numbers, formatted once for the bar and the plain line ---------------------------------

def clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def count_text(task: Task) -> str:
    total = f"{int(task.total):,}" if task.total is not None else "?"
    return f"{int(task.completed):,}/{total}"


def rate_text(task: Task) -> str:
    speed = task.finished_speed or task.speed
    return f"{speed:,.1f} it/s" if speed else "- it/s"


def eta_text(task: Task) -> str:
    return "ETA " + (clock(task.time_remaining) if task.total is not None else "-:--:--")


def shards_text(task: Task) -> str | None:
    shards = task.fields.get("shards")
    return None if shards is None else f"{int(task.fields.get('shards_done', 0)):,}/{int(shards):,} shards"


def plain_line(task: Task) -> str:
    """The plain-line form of a task, e.g. `embed rank 0/1: 3/12 shards, 1,024/4,096 (25.0%), 85.3 it/s,
    elapsed 0:00:12, ETA 0:00:36`."""
    parts = [p for p in (shards_text(task),) if p]
    count = count_text(task)
    parts.append(f"{count} ({task.percentage:.1f}%)" if task.total else count)
    parts += [rate_text(task), f"elapsed {clock(task.elapsed)}", eta_text(task)]
    detail = task.fields.get("detail")
    return f"{task.description}: {', '.join(parts)}" + (f" | {detail}" if detail else "")


class _Text(ProgressColumn):
    def __init__(self, render_text, **column: Any) -> None:
        self._render_text = render_text
        super().__init__(table_column=Column(no_wrap=True, **column))

    def render(self, task: Task) -> Text:
        return Text(self._render_text(task))


class RateColumn(_Text):
    """items/s of the task (rich's own speed column is for bytes)."""

    def __init__(self) -> None:
        super().__init__(rate_text, justify="right")


# ---- terminal: the live bar -----------------------------------------------------------------------

class LiveProgress(Progress):
    """A live bar whose row keeps n/total, items/s and ETA at any width: the bar, then the percentage,
    then the elapsed time are dropped until the description gets MIN_DESCRIPTION columns, and the
    description is cut with an ellipsis to what is left. A task's `detail` field is shown on its
    own line under the row."""

    def __init__(self, out: Console, disable: bool = False, get_time: Callable[[], float] | None = None) -> None:
        self._description = TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True))
        self._bar = BarColumn(bar_width=BAR_WIDTH)
        self._percent = _Text(lambda t: f"{t.percentage:>3.0f}%", justify="right")
        self._elapsed = _Text(lambda t: clock(t.elapsed))
        super().__init__(
            self._description,
            self._bar,
            _Text(count_text, justify="right"),
            self._percent,
            RateColumn(),
            self._elapsed,
            _Text(eta_text),
            console=out,
            disable=disable,
            transient=False,
            get_time=get_time,
        )

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        tasks = [t for t in tasks if t.visible]
        out = self.live.console if hasattr(self, "live") else None  # rich renders once before `live` is set
        width = out.width if out is not None else 10_000
        cells = {c: [c(t) for t in tasks] for c in self.columns if isinstance(c, ProgressColumn)}

        def needed(column: ProgressColumn) -> int:
            if out is None or not tasks:
                return 0
            return max(Measurement.get(out, out.options, cell).maximum for cell in cells[column])

        kept = list(cells)

        def others() -> int:  # the row's width without the description (one space between columns)
            return sum(needed(c) + 1 for c in kept if c is not self._description)

        for column in (self._bar, self._percent, self._elapsed):
            if others() + min(needed(self._description), MIN_DESCRIPTION) <= width:
                break
            kept.remove(column)
        room = max(1, width - others())
        for text in cells[self._description]:
            text.truncate(room, overflow="ellipsis")
        table = Table.grid(*(c.get_table_column().copy() for c in kept), padding=(0, 1), expand=False)
        for row in range(len(tasks)):
            table.add_row(*(cells[c][row] for c in kept))
        return table

    def update(self, task_id: TaskID, *, line: bool = False, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)  # `line` is for plain lines: the live row is always current

    def get_renderables(self) -> Iterable[RenderableType]:
        tasks = [t for t in self.tasks if t.visible]
        details = [Padding(Text(str(t.fields["detail"]), overflow="fold"), (0, 0, 0, 2)) for t in tasks if t.fields.get("detail")]
        yield Group(self.make_tasks_table(tasks), *details) if details else self.make_tasks_table(tasks)


# ---- no terminal: plain lines -----------------------------------------------------------------------

class LineProgress(Progress):
    """No live display: a flushed plain line per finished shard, per `update(..., line=True)`, at most
    every `every_s` seconds otherwise, and a last one at the end if anything moved since."""

    def __init__(self, out: Console, every_s: float, get_time: Callable[[], float] | None = None) -> None:
        super().__init__(console=out, disable=True, get_time=get_time)
        self.every_s = every_s
        self._printed: dict[TaskID, tuple[float, tuple]] = {}

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._printed[task_id] = (self.get_time(), ())
        return task_id

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_print(task_id)

    def update(self, task_id: TaskID, *, line: bool = False, **kwargs: Any) -> None:
        before = self._task(task_id).fields.get("shards_done")
        super().update(task_id, **kwargs)
        shard_done = "shards_done" in kwargs and kwargs["shards_done"] != before
        self._maybe_print(task_id, now=line or shard_done)

    def stop(self) -> None:
        for task_id in list(self._printed):
            if self._printed[task_id][1] != self._state(task_id):
                self._print(task_id)
        super().stop()

    def _task(self, task_id: TaskID) -> Task:
        with self._lock:
            return self._tasks[task_id]

    def _state(self, task_id: TaskID) -> tuple:
        task = self._task(task_id)
        return task.completed, task.total, task.fields.get("shards_done"), task.fields.get("detail")

    def _maybe_print(self, task_id: TaskID, now: bool = False) -> None:
        every = self._task(task_id).fields.get("line_every_s", self.every_s)
        if now or (every and self.get_time() - self._printed[task_id][0] >= every):
            self._print(task_id)

    def _print(self, task_id: TaskID) -> None:
        self.console.print(plain_line(self._task(task_id)), markup=False, highlight=False, soft_wrap=True)
        self._printed[task_id] = (self.get_time(), self._state(task_id))


def progress(out: Console | None = None) -> Progress:
    """The progress display of a stage: a live bar when stderr (or `out`) is a terminal, plain
    lines when it is not, nothing with LVD_QUIET=1."""
    terminal = out.is_terminal if out is not None else sys.stderr.isatty()
    out = out or console
    if quiet():
        return LiveProgress(out, disable=True)
    return LiveProgress(out) if terminal else LineProgress(out, line_every_s())


# ---- the end-of-stage summary -------------------------------------------------------------------------

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
