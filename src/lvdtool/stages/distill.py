"""`lvd distill`: a frozen teacher run -> one distilled student per `--arch` (out/<arch>/).

The teacher (its run's architecture and DINO/iBOT heads, from the newest checkpoint) is frozen
in eval mode and runs once per batch; every student trains on the same batch against the same
Sinkhorn-Knopp targets, without masking or stochastic depth, and exports its EMA as
out/<arch>/backbone.pth. The students get the teacher's head sizes (carried from its config).
Same loop, restart and torchrun rules as `lvd pretrain` (`python -m lvdtool.stages.distill ...`).
"""

from __future__ import annotations

import sys
from typing import Any

from lvdtool.config import compose_config
from lvdtool.errors import ConfigError
from lvdtool.overrides import carried, last_value
from lvdtool.train.config import PretrainConfig
from lvdtool.stages.training_entry import module_entry, train_stage
from lvdtool.train.source_run import open_source

HEAD_KEYS = ("prototypes", "hidden_dim", "bottleneck_dim", "nlayers", "prototype_gain", "prototype_init",
             "prototype_layer")
# The students' heads are the teacher's (the same prototype counts are required, as in DINOv3).
CARRIED = tuple(f"dino.{k}" for k in HEAD_KEYS) + tuple(f"ibot.{k}" for k in (*HEAD_KEYS, "separate_head"))


def compose(overrides: list[str]) -> tuple[PretrainConfig, dict[str, Any]]:
    teacher = last_value(overrides, "distill.teacher")
    if not teacher:
        raise ConfigError("distill needs a teacher: --teacher RUN (distill.teacher=...)")
    source = open_source(teacher, role="teacher")
    base = carried(source.config, CARRIED) if source.config else []
    return compose_config("distill", base + overrides, PretrainConfig)


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    return train_stage(compose, overrides, overwrite)


if __name__ == "__main__":
    sys.exit(module_entry(main, sys.argv[1:]))
