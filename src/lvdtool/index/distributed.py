"""torch.distributed helpers for data split across ranks (each rank holds a row range).

Ranks hold consecutive row ranges in rank order, so a global row id is
`row_offset + local_row`; random choices are made on global ids, which keeps results
independent of how the rows are split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from lvdtool.errors import ConfigError


def distributed_active(requested: bool | None) -> bool:
    """Whether to all-reduce: `None` means "when a process group with >1 rank is initialised"."""
    ready = dist.is_available() and dist.is_initialized()
    if requested is None:
        return ready and dist.get_world_size() > 1
    if requested and not ready:
        raise ConfigError("distributed: True needs an initialised torch.distributed process group")
    return bool(requested)


def _comm_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@dataclass(frozen=True)
class Partition:
    """Where this rank's rows sit among all ranks' rows."""

    rank: int
    world_size: int
    row_offset: int
    local_rows: int
    global_rows: int


def partition(local_rows: int, active: bool) -> Partition:
    if not active:
        return Partition(0, 1, 0, local_rows, local_rows)
    counts = all_gather_equal(torch.tensor([local_rows], dtype=torch.int64), active).view(-1).tolist()
    rank = dist.get_rank()
    return Partition(rank, len(counts), int(sum(counts[:rank])), local_rows, int(sum(counts)))


def all_reduce_sum(tensor: torch.Tensor, active: bool) -> torch.Tensor:
    """Sum over ranks (in place on a communication-device copy); identity when not active."""
    if not active:
        return tensor
    buf = tensor.to(_comm_device())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(tensor.device)


def all_gather_equal(tensor: torch.Tensor, active: bool) -> torch.Tensor:
    """Concatenate same-shaped tensors from all ranks along dim 0, in rank order."""
    if not active:
        return tensor
    buf = tensor.contiguous().to(_comm_device())
    parts = [torch.empty_like(buf) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, buf)
    return torch.cat(parts).to(tensor.device)


def all_gather_rows(tensor: torch.Tensor, active: bool) -> torch.Tensor:
    """Concatenate tensors whose first dim differs between ranks, in rank order."""
    if not active:
        return tensor
    sizes = all_gather_equal(torch.tensor([tensor.shape[0]], dtype=torch.int64), active).view(-1).tolist()
    if max(sizes) == 0:
        return tensor
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = all_gather_equal(padded, active).view(len(sizes), max(sizes), *tensor.shape[1:])
    return torch.cat([gathered[r, :n] for r, n in enumerate(sizes)])
