"""metrics.jsonl: one JSON line per logged iteration, kept equal to an uninterrupted run's.

On resume from a checkpoint of iteration k (k steps done), lines of iterations >= k, written
by the interrupted run after its last checkpoint, are dropped before new lines are appended.
The same records go to TensorBoard event files when a writer is given (train/tensorboard_log.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lvdtool.artifacts.atomic import atomic_write_bytes
from lvdtool.train.tensorboard_log import TensorBoardLog

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    def __init__(self, path: Path, enabled: bool, tensorboard: TensorBoardLog | None = None) -> None:
        self.path = Path(path)
        self.enabled = enabled  # rank 0 writes
        self.tensorboard = tensorboard

    def truncate_from(self, iteration: int) -> int:
        """Keep only lines of iterations < `iteration` (a torn last line is dropped too)."""
        if not self.enabled or not self.path.exists():
            return 0
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if int(record.get("iteration", -1)) < iteration:
                kept.append(line)
        atomic_write_bytes(self.path, "".join(f"{line}\n" for line in kept).encode())
        return len(kept)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.tensorboard is not None:
                self.tensorboard.write(record)

    def flush(self) -> None:
        """At each checkpoint: the events up to it are on disk (metrics.jsonl is written unbuffered)."""
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Throughput:
    """Images/s and seconds per step over the window since the last `read`."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._images = 0
        self._steps = 0

    def step(self, images: int) -> None:
        self._images += images
        self._steps += 1

    def read(self) -> tuple[float, float]:
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        rate, per_step = self._images / elapsed, elapsed / max(self._steps, 1)
        self._start, self._images, self._steps = now, 0, 0
        return rate, per_step
