"""Stochastic depth on packed tokens, drawn for the whole forward pass before it starts.

Two modes, as DINOv2: above `EFFICIENT_THRESHOLD` a residual branch runs only on a random subset
of max(int(B*(1-rate)), 1) images of each crop batch and is added back scaled by B/subset
(dropped images cost no compute); at lower rates the branch runs on every image and a per-image
Bernoulli(1-rate)/(1-rate) factor multiplies it.

The random choices of all blocks are drawn in a few batched tensor ops (one uniform draw per crop
batch and rate, ranked by argsort for subsets) instead of one randperm per block and branch:
ViT-g would otherwise launch about a thousand tiny kernels per step. Draws are made crop batch
by crop batch, so a multi-crop forward consumes the RNG exactly like forwards of each crop batch
one after another and, under the same seed, gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lvdtool.models.token_layout import TokenLayout

# Below this rate the subset gather/scatter costs more than it saves (DINOv2's choice).
EFFICIENT_THRESHOLD = 0.1


@dataclass(frozen=True)
class SubsetDrop:
    """Run the branch on `rows` only (laid out as `layout`), scale by `scale` when adding back."""

    rows: torch.Tensor  # (R_sub,) int64 row indices into the packed tokens
    layout: TokenLayout
    scale: float | torch.Tensor  # a float, or (R_sub, 1) when crop batches have different scales


@dataclass(frozen=True)
class SampleDrop:
    """Run the branch on all rows and multiply it by a per-row factor (0 or 1/keep)."""

    row_scale: torch.Tensor  # (R, 1)


BranchDrop = SubsetDrop | SampleDrop | None


@dataclass(frozen=True)
class BlockDrop:
    attn: BranchDrop
    ffn: BranchDrop


def subset_size(batch: int, rate: float) -> int:
    return max(int(batch * (1 - rate)), 1)


def _subset_branches(layout: TokenLayout, rate: float, uniforms: list[torch.Tensor]) -> list[SubsetDrop]:
    """uniforms[i]: (branches, B_i) draws of crop batch i -> one SubsetDrop per branch."""
    rows, groups, scales = [], [], []
    for (batch, seq_len), offset, u in zip(layout.groups, layout.offsets, uniforms):
        size = subset_size(batch, rate)
        # The ranks of iid uniforms are a uniform random permutation; sorting the kept indices
        # only improves memory locality (the scatter-add does not depend on order).
        kept = u.argsort(dim=1)[:, :size].sort(dim=1).values
        tokens = torch.arange(seq_len, device=u.device)
        rows.append((offset + kept[:, :, None] * seq_len + tokens).flatten(1))
        groups.append((size, seq_len))
        scales.append(batch / size)
    all_rows = torch.cat(rows, dim=1)  # (branches, R_sub)
    sub_layout = TokenLayout(tuple(groups))
    scale: float | torch.Tensor = scales[0]
    if any(s != scales[0] for s in scales):
        counts = torch.tensor(sub_layout.group_rows, device=all_rows.device)
        scale = torch.tensor(scales, device=all_rows.device).repeat_interleave(counts)[:, None]
    return [SubsetDrop(r, sub_layout, scale) for r in all_rows]


def _sample_branches(layout: TokenLayout, rate: float, uniforms: list[torch.Tensor]) -> list[SampleDrop]:
    keep = 1.0 - rate
    factors = [
        ((u < keep).to(u.dtype) / keep).repeat_interleave(seq_len, dim=1)
        for u, (_, seq_len) in zip(uniforms, layout.groups)
    ]
    return [SampleDrop(f[:, None]) for f in torch.cat(factors, dim=1)]


def draw_drop_plan(layout: TokenLayout, rates: list[float], device: torch.device) -> list[BlockDrop] | None:
    """Random choices of every block for one forward pass; None when nothing is dropped."""
    if all(r <= 0.0 for r in rates):
        return None
    by_rate: dict[float, list[int]] = {}  # blocks sharing a rate are drawn together
    for block, rate in enumerate(rates):
        if rate > 0.0:
            by_rate.setdefault(rate, []).append(block)
    # Crop batch outermost: the RNG order then matches separate per-batch forwards.
    uniforms: dict[float, list[torch.Tensor]] = {rate: [] for rate in by_rate}
    for batch, _ in layout.groups:
        for rate, blocks in by_rate.items():
            uniforms[rate].append(torch.rand(2 * len(blocks), batch, device=device))
    plan: list[BlockDrop] = [BlockDrop(None, None) for _ in rates]
    for rate, blocks in by_rate.items():
        make = _subset_branches if rate > EFFICIENT_THRESHOLD else _sample_branches
        branches = make(layout, rate, uniforms[rate])
        for i, block in enumerate(blocks):
            plan[block] = BlockDrop(attn=branches[2 * i], ffn=branches[2 * i + 1])
    return plan


Branch = Callable[[torch.Tensor, TokenLayout], torch.Tensor]


def add_residual(x: torch.Tensor, layout: TokenLayout, branch: Branch, drop: BranchDrop) -> torch.Tensor:
    """x + branch(x), with the branch dropped per image as `drop` says (None: keep all)."""
    if drop is None:
        return x + branch(x, layout)
    if isinstance(drop, SampleDrop):
        return x + branch(x, layout) * drop.row_scale.to(x.dtype)
    # Subset mode: dropped images never enter the branch, so they cost no compute.
    residual = branch(x.index_select(0, drop.rows), drop.layout)
    if isinstance(drop.scale, float):
        return x.index_add(0, drop.rows, residual.to(x.dtype), alpha=drop.scale)
    return x.index_add(0, drop.rows, (residual * drop.scale.to(residual.dtype)).to(x.dtype))
