"""Parallelism, precision, activation checkpointing and compile: applied here, in one fixed order.

Order per network (student and teacher alike): activation checkpointing and compile on each
block's forward, then FSDP2 `fully_shard` on each block, on each head and on the network (the
root, which keeps the tokens, patch embedding and final norm). Student and teacher are sharded
identically, so the teacher EMA runs shard by shard. The same code runs at every world size,
one CPU process included (a 1-rank group), which keeps checkpoints uniform across world sizes.

Precision: bf16 parameters with float32 gradient reduction on CUDA (`MixedPrecisionPolicy`;
the official code reduces the heads in float32 too), plain float32 on CPU unless asked.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import checkpoint

from lvdtool.errors import ConfigError
from lvdtool.ssl.distill_arch import DistillMetaArch
from lvdtool.ssl.gram import GramTeacher
from lvdtool.ssl.meta_arch import SSLMetaArch, SSLNetwork

VIEW_WARNING = "FSDP2-wrapped module .* returned a view tensor"


@dataclass(frozen=True)
class ParallelPlan:
    device: torch.device
    world_size: int
    param_dtype: torch.dtype
    activation_checkpointing: bool = False
    compile: bool = False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return torch.float32
    raise ConfigError(f"parallel.precision={precision!r}: expected auto, fp32 or bf16")


def _wrap_block_forward(block: nn.Module, plan: ParallelPlan) -> None:
    # The bound forward is replaced on the instance: parameter names (and so the official
    # checkpoint layout and the optimizer groups) stay as they are, unlike wrapper modules.
    forward: Callable[..., Any] = block.forward
    if plan.compile:
        forward = torch.compile(forward)
    if plan.activation_checkpointing:
        inner = forward

        def forward(*args: Any, **kwargs: Any) -> Any:  # noqa: F811 - deliberate rebinding
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward  # type: ignore[method-assign]


def _shard_network(network: SSLNetwork | GramTeacher, mesh: DeviceMesh, plan: ParallelPlan, trained: bool) -> None:
    policy = MixedPrecisionPolicy(param_dtype=plan.param_dtype, reduce_dtype=torch.float32)
    for block in network.backbone.blocks:
        _wrap_block_forward(block, plan)
        fully_shard(block, mesh=mesh, mp_policy=policy)
    for head in (getattr(network, "dino_head", None), getattr(network, "ibot_head", None)):
        if head is not None:
            fully_shard(head, mesh=mesh, mp_policy=policy)
    # The student's root is needed again right away by backward: keep it gathered after forward
    # (backward reshards it). The teacher has no backward and its shards change with every EMA
    # update, so it must reshard, or its next forward would reuse stale gathered weights.
    fully_shard(network, mesh=mesh, mp_policy=policy, reshard_after_forward=not trained)


def networks_of(meta: SSLMetaArch | DistillMetaArch) -> list[tuple[SSLNetwork | GramTeacher, bool]]:
    """(network, trained) for every network of a meta-architecture. Distillation: the frozen
    teacher (sharded for inference only: no gradients, resharded after each forward), then each
    student and its EMA, sharded identically so the EMA runs shard-locally."""
    if isinstance(meta, DistillMetaArch):
        out = [(meta.teacher, False)]
        for pair in meta.pairs.values():
            out += [(pair.student, True), (pair.teacher, False)]
        return out
    out = [(meta.student, True), (meta.teacher, False)]
    if meta.gram_teacher is not None:  # backbone only, frozen: sharded like the teacher, so a refresh is shard-local
        out.append((meta.gram_teacher, False))
    return out


def parallelize(meta: SSLMetaArch | DistillMetaArch, plan: ParallelPlan) -> SSLMetaArch | DistillMetaArch:
    """Move to the device and shard every network in place; returns `meta`."""
    # The networks return views (split head logits); nothing modifies them in place, so FSDP's
    # warning about in-place ops on view outputs does not apply.
    warnings.filterwarnings("ignore", message=VIEW_WARNING)
    meta.to(plan.device)
    mesh = init_device_mesh(plan.device.type, (plan.world_size,))
    for network, trained in networks_of(meta):
        _shard_network(network, mesh, plan, trained=trained)
    return meta
