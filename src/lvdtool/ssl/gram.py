"""Gram anchoring (DINOv3): keep the student's patch-similarity structure close to a frozen teacher's.

For each global crop, the Gram matrix of the student's L2-normalised patch tokens (P x P cosine
similarities) is regressed onto the Gram matrix of a frozen *Gram teacher* that saw the same
crop at a higher resolution (its patch grid resized to the student's). The Gram teacher is a
copy of the EMA teacher's backbone, refreshed from it on a fixed schedule (`GramRefresh`).

Single-device code: the Gram teacher is sharded like the EMA teacher from outside
(`lvdtool.train.parallelize`), so a refresh copies shard by shard.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lvdtool.errors import ConfigError, InputError

Grid = tuple[int, int]


def resize_patch_grid(patches: torch.Tensor, grid: Grid, size: Grid) -> torch.Tensor:
    """[N, h*w, D] patch tokens on a (h, w) grid -> [N, H*W, D] on `size`, bicubic
    (align_corners=False, no antialias: the official Gram-teacher resize)."""
    n, p, d = patches.shape
    if p != grid[0] * grid[1]:
        raise InputError(f"resize_patch_grid: {p} patches do not form a {grid[0]}x{grid[1]} grid")
    image = patches.transpose(1, 2).reshape(n, d, grid[0], grid[1])
    image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=False)
    return image.flatten(2).transpose(1, 2)


def gram_loss(student: torch.Tensor, teacher: torch.Tensor, student_grid: Grid, teacher_grid: Grid) -> torch.Tensor:
    """Mean over (image, i, j) of (S - T)^2 in float32, S = n(Xs) n(Xs)^T and T = n(Xg) n(Xg)^T
    per image, n = L2-normalisation over the feature dimension (after resizing the teacher's grid
    to the student's when they differ). student [N, P, D] (with graph), teacher [N, Pg, D]."""
    if student.ndim != 3 or teacher.ndim != 3 or student.shape[0] != teacher.shape[0]:
        raise InputError(f"gram_loss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                         "must be [N, P, D] with the same N")
    xs, xg = student.float(), teacher.float()
    if tuple(teacher_grid) != tuple(student_grid):
        xg = resize_patch_grid(xg, teacher_grid, student_grid)
    if xs.shape != xg.shape:
        raise InputError(f"gram_loss: student {tuple(xs.shape)} and resized teacher {tuple(xg.shape)} differ")
    xs, xg = F.normalize(xs, dim=-1), F.normalize(xg, dim=-1)
    return F.mse_loss(xs @ xs.transpose(1, 2), xg @ xg.transpose(1, 2))


class GramRefresh:
    """When the Gram teacher is refreshed from the EMA teacher: after iteration `it` (0-based)
    when (it+1) >= first, (it+1) % every == 0, and fewer than `max_refreshes` refreshes happened
    before (`every` 0: never). A pure function of the iteration, so the count is rebuilt on
    resume exactly (`count_before`)."""

    def __init__(self, every: int, first: int = 0, max_refreshes: int | None = None) -> None:
        if every < 0 or first < 0 or (max_refreshes is not None and max_refreshes < 0):
            raise ConfigError(f"GramRefresh: every={every}, first={first}, max_refreshes={max_refreshes} must be >= 0")
        self.every, self.first, self.max_refreshes = int(every), int(first), max_refreshes

    def _points_up_to(self, done: int) -> int:
        """Refresh points m = it + 1 (multiples of `every`, >= first) with m <= done."""
        if self.every == 0:
            return 0
        low = max(self.first, 1)
        return max(0, done // self.every - (low - 1) // self.every)

    def count_before(self, iteration: int) -> int:
        """Refreshes made by the time iteration `iteration` starts (after iterations < it)."""
        count = self._points_up_to(int(iteration))
        return count if self.max_refreshes is None else min(count, self.max_refreshes)

    def after(self, it: int) -> bool:
        done = int(it) + 1
        if self.every == 0 or done < self.first or done % self.every:
            return False
        return self.max_refreshes is None or self.count_before(it) < self.max_refreshes


class GramTeacher(nn.Module):
    """A frozen backbone (no heads) in eval mode that gives the Gram targets; `refreshes` counts
    the copies from the EMA teacher (kept in the checkpoint with the weights)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.int64))

    def train(self, mode: bool = True) -> GramTeacher:
        super().train(False)  # always eval: no stochastic depth
        return self

    @torch.no_grad()
    def copy_from(self, backbone: nn.Module) -> None:
        """self.backbone <- backbone (parameters and buffers), on local shards when sharded."""
        pairs = list(zip(self.backbone.parameters(), backbone.parameters())) + \
            list(zip(self.backbone.buffers(), backbone.buffers()))
        for own, other in pairs:
            own_local = own.to_local() if hasattr(own, "to_local") else own
            other_local = other.to_local() if hasattr(other, "to_local") else other
            if own_local.shape != other_local.shape:
                raise InputError(f"GramTeacher.copy_from: shapes {tuple(own_local.shape)} and "
                                 f"{tuple(other_local.shape)} differ (another architecture?)")
            own_local.copy_(other_local)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """x_norm_patchtokens [N, P, D] of the Gram crops."""
        return self.backbone(images)["x_norm_patchtokens"]
