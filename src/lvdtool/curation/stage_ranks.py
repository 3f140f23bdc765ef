"""The ranks of a dedup/curate launch: one process, or W torch.distributed processes (torchrun, srun).

Global steps run on rank 0 and are handed to the others through `_work/` files, so the only
collectives are barriers and one small broadcast (the run id, an error message): gloo carries
them whatever device computes. A failure on rank 0 is re-raised on every rank, so no rank waits
in a barrier for a rank that died alone.
"""
from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from lvdtool.artifacts.ranks import RankInfo, rank_info
from lvdtool.errors import ConfigError, LvdError

# Rank 0's global steps (components, the keep decision, pool k-means) run while the others wait.
BARRIER_TIMEOUT = datetime.timedelta(hours=12)
T = TypeVar("T")
_ERRORS = {cls.__name__: cls for cls in (LvdError, *LvdError.__subclasses__())}


@dataclass
class StageRanks:
    info: RankInfo
    owns_group: bool

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world_size(self) -> int:
        return self.info.world_size

    @property
    def is_main(self) -> bool:
        return self.info.rank == 0

    @property
    def active(self) -> bool:
        return self.info.world_size > 1

    def owns(self, index: int) -> bool:
        """Unit `index` (a k-NN block, an output shard) belongs to rank index mod W."""
        return self.info.owns(index)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def agree(self, value: bool) -> bool:
        """Rank 0's `value` on every rank (e.g. "is this step already stored?")."""
        if not self.active:
            return value
        box = [bool(value)]
        dist.broadcast_object_list(box, src=0)
        return bool(box[0])

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """Run `fn` on rank 0 only; then every rank waits, and raises rank 0's error if it failed."""
        result: T | None = None
        error: BaseException | None = None
        if self.is_main:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling the others
                error = exc
        if self.active:
            message = [None if error is None else f"{type(error).__name__}\0{error}"]
            dist.broadcast_object_list(message, src=0)
            if not self.is_main and message[0] is not None:
                kind, text = message[0].split("\0", 1)
                raise _ERRORS.get(kind, LvdError)(f"rank 0 failed: {text}")
        if error is not None:
            raise error
        return result

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def join_ranks(stage: str) -> StageRanks:
    """This process's place in the launch; joins the process group the launcher set up (env://)."""
    info = rank_info()
    if info.world_size == 1:
        # a fresh run id per launch, so a finalize lock left by a killed run never blocks the next one
        return StageRanks(RankInfo(0, 1, f"{stage}-{os.getpid()}-{time.time_ns()}"), owns_group=False)
    owns = False
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ConfigError(f"WORLD_SIZE={info.world_size} but {name} is not set: launch {stage} with torchrun or srun")
        dist.init_process_group("gloo", init_method="env://", rank=info.rank, world_size=info.world_size,
                                timeout=BARRIER_TIMEOUT)
        owns = True
    elif dist.get_world_size() != info.world_size:
        raise ConfigError(f"WORLD_SIZE={info.world_size} but the process group has {dist.get_world_size()} ranks")
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if torch.cuda.is_available():
        torch.cuda.set_device(local % torch.cuda.device_count())
    run_id = [f"{stage}-{os.getpid()}-{time.time_ns()}"]
    dist.broadcast_object_list(run_id, src=0)  # one id per launch, shared by its ranks
    return StageRanks(RankInfo(info.rank, info.world_size, run_id[0]), owns_group=owns)


def refuse_distributed(what: str) -> None:
    """For options that cannot run on several ranks: a one-line error instead of W copies."""
    info = rank_info()
    if info.world_size > 1:
        raise ConfigError(f"{what} does not run distributed; launch it as one process (WORLD_SIZE={info.world_size})")
