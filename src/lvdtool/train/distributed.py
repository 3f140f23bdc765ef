"""Process group and device of a training process (torchrun or a single process).

Training always runs with a process group, so one code path (FSDP2, DCP) serves every world
size: under torchrun (WORLD_SIZE > 1) the group comes from the environment (NCCL on CUDA, gloo
on CPU); a single process gets a 1-rank group over an in-memory store (no port, no env).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lvdtool.errors import ConfigError, LvdError

TIMEOUT = datetime.timedelta(minutes=30)
_ERRORS = {cls.__name__: cls for cls in (LvdError, *LvdError.__subclasses__())}


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # created here, so destroyed here

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def run_on_main(self, fn: Callable[[], None]) -> None:
        """Run `fn` on rank 0; if it raises an LvdError, every rank raises it (no rank is left
        waiting in a collective for a rank that failed alone)."""
        error: LvdError | None = None
        if self.is_main:
            try:
                fn()
            except LvdError as exc:
                error = exc
        message = [f"{type(error).__name__}\0{error}" if error else None]
        if self.world_size > 1:
            dist.broadcast_object_list(message, src=0)
        if error is not None:
            raise error
        if message[0] is not None:
            kind, text = message[0].split("\0", 1)
            raise _ERRORS.get(kind, LvdError)(text)

    def run_on_all(self, fn: Callable[[], None]) -> None:
        """Run `fn` on every rank; if it raises an LvdError on any rank, every rank raises the first
        such error (by rank), so no rank waits in a later collective for one that failed."""
        error: LvdError | None = None
        try:
            fn()
        except LvdError as exc:
            error = exc
        mine = f"{type(error).__name__}\0{error}" if error else None
        messages: list[str | None] = [mine]
        if self.world_size > 1:
            messages = [None] * self.world_size
            dist.all_gather_object(messages, mine)
        first = next((m for m in messages if m), None)
        if first is None:
            return
        if error is not None and first == mine:
            raise error
        kind, text = first.split("\0", 1)
        raise _ERRORS.get(kind, LvdError)(text)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("parallel.device=cuda but no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_name: str = "auto") -> DistEnv:
    """Join (or create) the default process group and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        if world > 1:
            dist.init_process_group(backend, timeout=TIMEOUT, device_id=device if device.type == "cuda" else None)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=TIMEOUT)
        owns = True
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, owns)


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a small float tensor (in place; returns it)."""
    if dist.get_world_size() > 1:
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values
