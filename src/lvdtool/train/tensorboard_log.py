"""TensorBoard event files of a training run, in `<run>/tensorboard/` next to metrics.jsonl.

train.tensorboard: auto (the default) writes them when the `tensorboard` package is installed,
on requires it, off never writes. Rank 0 writes; the scalars are metrics.jsonl's numeric fields,
step = iteration. A resumed run opens its writer with purge_step = the resume iteration, so the
viewer hides the events that an interrupted run wrote after its last checkpoint, as
metrics.jsonl drops those lines.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lvdtool.errors import ConfigError, DependencyError

TENSORBOARD_DIR = "tensorboard"
MODES = ("auto", "on", "off")


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLog:
    """The writer is made at the first record: the folder appears only after the run's manifest,
    so a run killed during its setup is still recognised as this stage's run."""

    def __init__(self, log_dir: Path, start_iteration: int) -> None:
        self.log_dir, self.start_iteration = Path(log_dir), start_iteration
        self.writer: Any = None

    def write(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self.start_iteration)
        step = int(record["iteration"])
        for name, value in record.items():
            if name != "iteration" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_tensorboard(mode: str, run_dir: Path, enabled: bool, start_iteration: int) -> TensorBoardLog | None:
    """The run's event writer, or None (mode off, tensorboard not installed under auto, or not rank 0).
    Every rank checks the mode, so a bad one stops them all."""
    if mode not in MODES:
        raise ConfigError(f"train.tensorboard={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "off":
        return None
    if not tensorboard_installed():
        if mode == "on":
            raise DependencyError("train.tensorboard=on: the tensorboard package is not installed "
                                  "(pip install tensorboard, or train.tensorboard=auto|off)")
        return None
    return TensorBoardLog(Path(run_dir) / TENSORBOARD_DIR, start_iteration) if enabled else None
