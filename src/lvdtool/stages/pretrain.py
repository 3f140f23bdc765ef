"""`lvd pretrain`: images artifact (+ selection) -> checkpoint artifact (a DINOv2 training run).

Single process: `lvd pretrain ...` (or `python -m lvdtool.stages.pretrain key=value ...`).
Several processes: `torchrun --nproc_per_node=N -m lvdtool.stages.pretrain key=value ...`.
Rerunning the same command resumes from the newest complete checkpoint in `out`.
"""

from __future__ import annotations

import sys
from typing import Any

from lvdtool.config import compose_config
from lvdtool.console import print_summary
from lvdtool.errors import LvdError
from lvdtool.train.config import PretrainConfig
from lvdtool.train.loop import run_pretraining


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    """Compose configs/pretrain.yaml with `overrides` (e.g. ["recipe=vit_l14", "data.images=..."]),
    train or resume, print the summary on rank 0; returns the summary rows."""
    cfg, resolved = compose_config("pretrain", overrides, PretrainConfig)
    summary = run_pretraining(cfg, resolved, overwrite=overwrite)
    rows = summary.as_rows()
    if _is_rank_zero():
        print_summary(f"pretrain -> {cfg.out}", rows)
    return rows


def _is_rank_zero() -> bool:
    from lvdtool.artifacts.ranks import rank_info

    return rank_info().rank == 0


def _entry(argv: list[str]) -> int:
    """`python -m` / `torchrun -m` entry: key=value overrides, optional --overwrite."""
    overwrite = "--overwrite" in argv
    try:
        main([a for a in argv if a != "--overwrite"], overwrite=overwrite)
    except LvdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_entry(sys.argv[1:]))
