"""`lvd hires-adapt`: a finished run -> a new run at a larger global crop (the 518 px phase).

The new run starts from the source run's teacher (backbone and DINO/iBOT heads, in student and
teacher; optimizer fresh) and trains at `crops.global_crops_size` (or a DINOv3-style mixture of
resolutions) with a short-phase schedule from `configs/hires_recipe/`. The networks and the
local crops are those of the source run (carried as overrides, so the manifest records them);
the stored position-embedding grid is made to cover the largest crop. Same loop, restart and
torchrun rules as `lvd pretrain` (`python -m lvdtool.stages.hires_adapt key=value ...`).
"""

from __future__ import annotations

import sys
from importlib.resources import files
from typing import Any

import yaml

from lvdtool.config import compose_config
from lvdtool.errors import ConfigError
from lvdtool.models import get_arch_config
from lvdtool.overrides import carried, last_value
from lvdtool.train.build import crop_sizes
from lvdtool.train.config import PretrainConfig
from lvdtool.stages.training_entry import module_entry, train_stage
from lvdtool.train.source_run import open_source

# What the new phase keeps from its source run: the networks, the local crops and augmentation,
# the optimizer's structure, and the teacher temperature it ended at (held constant: 0.07 for the
# paper recipes, as in DINOv3's phase). Other schedules, length and the global crop are the phase's.
CARRIED = ("model", "dino", "ibot", "crops", "optim.layerwise_decay", "optim.patch_embed_lr_mult",
           "optim.token_weight_decay", "optim.reference_batch")
# The phase's own: its global crop and resolution mixture (an empty source list would override the
# preset's mixture), and DINOv3's loss-bookkeeping keys its preset sets.
NOT_CARRIED = ("crops.global_crops_size", "crops.resolutions", "dino.local_weight", "dino.local_weight_ramp",
               "dino.koleo_group_size")


DEFAULT_RECIPE = "dinov2"  # as configs/hires_adapt.yaml


def recipe_keys(name: str) -> tuple[str, ...]:
    """The dotted keys a hires_recipe preset sets: the phase's values, never replaced by the source
    run's (e.g. the DINOv3 phase's flip_prob 0); command-line overrides still win over both."""
    path = files("lvdtool.configs") / "hires_recipe" / f"{name}.yaml"
    if not path.is_file():
        return ()  # an unknown name: Hydra reports it with the list of presets

    def walk(prefix: str, node: Any) -> list[str]:
        if not isinstance(node, dict):
            return [prefix]
        return [key for k, v in node.items() for key in walk(f"{prefix}.{k}" if prefix else str(k), v)]

    return tuple(walk("", yaml.safe_load(path.read_text()) or {}))


def compose(overrides: list[str]) -> tuple[PretrainConfig, dict[str, Any]]:
    source_path = last_value(overrides, "from_run")
    if not source_path:
        raise ConfigError("hires-adapt needs the run to start from: --from RUN (from_run=...)")
    source = open_source(source_path, role="from")
    skip = NOT_CARRIED + recipe_keys(last_value(overrides, "hires_recipe") or DEFAULT_RECIPE)
    base = carried(source.config, CARRIED, skip=skip) if source.config else []
    final_temp = ((source.config or {}).get("teacher") or {}).get("temp")
    if final_temp is not None:
        base += [f"teacher.temp={final_temp!r}", f"teacher.warmup_temp={final_temp!r}"]
    cfg, resolved = compose_config("hires_adapt", base + overrides, PretrainConfig)
    # The stored position-embedding grid must cover the largest global crop (518 px = 37 x 37 at
    # patch 14). It is recorded in the config, so a resume rebuilds the same network.
    arch = get_arch_config(cfg.model.arch)
    patch = cfg.model.patch_size or arch.patch_size
    stored = cfg.model.img_size or arch.img_size
    largest = max(size for size, _, _ in crop_sizes(cfg, patch))
    if largest > stored:
        cfg.model.img_size = resolved["model"]["img_size"] = largest
    return cfg, resolved


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    return train_stage(compose, overrides, overwrite)


if __name__ == "__main__":
    sys.exit(module_entry(main, sys.argv[1:]))
