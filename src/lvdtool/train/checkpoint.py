"""Training checkpoints: DCP sharded state for exact resume, plus the teacher backbone file.

Layout inside the run directory:
  checkpoints/ckpt-00001000/   complete checkpoint of iteration 1000 (1000 steps done)
      *.distcp, .metadata      DCP: student, teacher, centering buffers, optimizer (any world size)
      state.json               iteration, data cursor, run plan, world size
      backbone.pth             teacher backbone, official DINOv2 key layout
  checkpoints/ckpt-00001000.tmp/  a checkpoint being written; renamed when complete
  backbone.pth                 hard link to the newest checkpoint's backbone.pth

Only renamed directories count, so a run killed while writing leaves the previous checkpoint
as the newest one. RNG state is not stored: every random draw of the loop is seeded from
(seed, iteration, rank) or from the data position (see `lvdtool.data.sampler`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from lvdtool.artifacts.atomic import atomic_write_json
from lvdtool.errors import CheckpointError
from lvdtool.models import save_backbone
from lvdtool.models.checkpoint import sidecar_path
from lvdtool.train.distributed import DistEnv

CHECKPOINTS_DIR = "checkpoints"
STATE_NAME = "state.json"
BACKBONE_NAME = "backbone.pth"
TMP_SUFFIX = ".tmp"
_COMPLETE = re.compile(r"^ckpt-(\d+)$")


def checkpoint_name(iteration: int) -> str:
    return f"ckpt-{iteration:08d}"


def gather_backbone_state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) float state dict on rank 0, empty elsewhere. Collective: all ranks call it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(backbone, options=options)


def _link_or_copy(source: Path, target: Path) -> None:
    """Point `target` at `source`'s bytes atomically: a hard link (no extra space), else a copy."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        shutil.copyfile(source, temp)
    os.replace(temp, target)


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, path) of every complete checkpoint of a run directory, oldest first."""
    directory = Path(run_dir) / CHECKPOINTS_DIR
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _COMPLETE.match(path.name)
        if match and (path / STATE_NAME).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


class CheckpointStore:
    def __init__(self, run_dir: Path, env: DistEnv, keep: int) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / CHECKPOINTS_DIR
        self.env = env
        self.keep = keep

    def complete(self) -> list[tuple[int, Path]]:
        """(iteration, path) of every complete checkpoint, oldest first."""
        return complete_checkpoints(self.run_dir)

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1][1] if done else None

    def remove_partial(self) -> None:
        """Rank 0: delete checkpoints left half-written by a killed run."""
        if self.env.is_main and self.dir.is_dir():
            for path in self.dir.glob(f"*{TMP_SUFFIX}"):
                shutil.rmtree(path, ignore_errors=True)

    def save(self, iteration: int, meta: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
             prune: bool = True) -> Path:
        """Collective. Writes ckpt-<iteration>.tmp, then renames it; prunes old checkpoints (unless
        `prune` is false: several stores saved together prune after all of them are saved).
        `meta` has a `teacher` network whose backbone is exported (an SSLMetaArch or a StudentPair)."""
        final = self.dir / checkpoint_name(iteration)
        temp = final.with_name(final.name + TMP_SUFFIX)
        if self.env.is_main:
            shutil.rmtree(temp, ignore_errors=True)
            temp.mkdir(parents=True)
        self.env.barrier()
        model_state, optim_state = get_state_dict(meta, optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(temp))
        backbone = gather_backbone_state(meta.teacher.backbone)
        if self.env.is_main:
            save_backbone(backbone, temp / BACKBONE_NAME, config=meta.teacher.backbone.config)
            atomic_write_json(temp / STATE_NAME, {**state, "iteration": iteration, "world_size": self.env.world_size})
            if final.exists():  # a rerun re-saving the same iteration
                shutil.rmtree(final)
            os.replace(temp, final)
            # sidecar first: whoever reads the new weights finds their head count
            _link_or_copy(sidecar_path(final / BACKBONE_NAME), sidecar_path(self.run_dir / BACKBONE_NAME))
            _link_or_copy(final / BACKBONE_NAME, self.run_dir / BACKBONE_NAME)
            if prune:
                self.prune()
        self.env.barrier()
        return final

    def prune(self) -> None:
        """Rank 0: keep the newest `keep` complete checkpoints."""
        if not self.env.is_main:
            return
        for _, path in self.complete()[: -self.keep]:
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def read_state(path: Path) -> dict[str, Any]:
        """The state.json of a checkpoint: iteration, data cursor, plan, world size."""
        state_path = Path(path) / STATE_NAME
        try:
            state = json.loads(state_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{state_path}: unreadable checkpoint state ({exc})") from None
        for key in ("iteration", "data", "plan"):
            if key not in state:
                raise CheckpointError(f"{state_path}: lacks the key {key!r}")
        return state

    def load(self, path: Path, meta: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Collective. Restores model, centering and optimizer state (resharded to this world
        size by DCP); returns the checkpoint's state.json."""
        state = self.read_state(path)
        model_state, optim_state = get_state_dict(meta, optimizer)
        try:
            dcp.load({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))
        except Exception as exc:  # DCP raises a CheckpointException wrapping per-rank failures
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: cannot load checkpoint ({first})") from None
        set_state_dict(meta, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)
        return state
