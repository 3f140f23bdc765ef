"""Which process am I? RANK/WORLD_SIZE from torchrun, or SLURM's task variables."""
from __future__ import annotations

import os
from dataclasses import dataclass

from lvdtool.errors import ConfigError


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    run_id: str  # the same for every rank of one launch; used to name the finalize lock

    def owns(self, shard_index: int) -> bool:
        """Shard i belongs to rank i mod world_size."""
        return shard_index % self.world_size == self.rank


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def rank_info() -> RankInfo:
    rank = _int_env("RANK")
    world = _int_env("WORLD_SIZE")
    if rank is None and world is None:
        rank, world = _int_env("SLURM_PROCID"), _int_env("SLURM_NTASKS")
    rank = 0 if rank is None else rank
    world = 1 if world is None else world
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"invalid rank {rank} for world size {world} (RANK/WORLD_SIZE)")
    # torchrun's local ranks share their parent (the elastic agent); SLURM tasks share the job step.
    slurm = os.environ.get("SLURM_JOB_ID")
    run_id = (
        os.environ.get("LVD_RUN_ID")
        or (f"slurm{slurm}.{os.environ.get('SLURM_STEP_ID', '0')}" if slurm else None)
        or (f"ppid{os.getppid()}" if world > 1 else f"pid{os.getpid()}")
    )
    return RankInfo(rank=rank, world_size=world, run_id=run_id)
