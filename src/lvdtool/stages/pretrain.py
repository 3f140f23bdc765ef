"""`lvd pretrain`: images artifact (+ selection) -> checkpoint artifact (a DINOv2 training run).

Single process: `lvd pretrain ...` (or `python -m lvdtool.stages.pretrain key=value ...`).
Several processes: `torchrun --nproc_per_node=N -m lvdtool.stages.pretrain key=value ...`.
Rerunning the same command resumes from the newest complete checkpoint in `out`.
"""

from __future__ import annotations

import sys
from typing import Any

from lvdtool.config import compose_config
from lvdtool.stages.training_entry import module_entry, train_stage
from lvdtool.train.config import PretrainConfig


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    """Compose configs/pretrain.yaml with `overrides` (e.g. ["recipe=vit_l14", "data.images=..."]),
    train or resume, print the summary on rank 0; returns the summary rows."""
    return train_stage(lambda o: compose_config("pretrain", o, PretrainConfig), overrides, overwrite)


if __name__ == "__main__":
    sys.exit(module_entry(main, sys.argv[1:]))
