"""What the three training stages (pretrain, hires-adapt, distill) share as commands: compose the
config, run the one training loop, print the summary on rank 0, and the `python -m` / `torchrun -m`
entry with its one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from lvdtool.console import print_summary
from lvdtool.errors import LvdError
from lvdtool.train.config import PretrainConfig
from lvdtool.train.loop import run_pretraining

Compose = Callable[[list[str]], tuple[PretrainConfig, dict[str, Any]]]


def is_rank_zero() -> bool:
    from lvdtool.artifacts.ranks import rank_info

    return rank_info().rank == 0


def train_stage(compose: Compose, overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    """Compose, train (or resume) the run, print its summary on rank 0; returns the summary rows."""
    cfg, resolved = compose(overrides)
    summary = run_pretraining(cfg, resolved, overwrite=overwrite)
    rows = summary.as_rows()
    if is_rank_zero():
        print_summary(f"{cfg.stage} -> {cfg.out}", rows)
    return rows


def module_entry(main: Callable[..., Any], argv: list[str]) -> int:
    """`python -m` / `torchrun -m` entry: key=value overrides, optional --overwrite; exit 2 on an LvdError."""
    overwrite = "--overwrite" in argv
    try:
        main([a for a in argv if a != "--overwrite"], overwrite=overwrite)
    except LvdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
