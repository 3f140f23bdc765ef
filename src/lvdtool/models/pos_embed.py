"""Resampling the learned position embedding to another patch grid, exactly as the hub models.

The no-register models were trained with the DINO trick: bicubic in scale-factor mode with the
target grid enlarged by a small offset (0.1), which changes the sampling positions slightly; the
register models use an explicit target size with antialiasing. Both run in float32. Reproducing
the right variant matters: features drift measurably with the other one.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    grid_h: int,
    grid_w: int,
    offset: float,
    antialias: bool,
    num_prefix: int = 1,
) -> torch.Tensor:
    """(1, prefix + M*M, D) -> (1, prefix + grid_h*grid_w, D), prefix (CLS) rows unchanged.

    offset > 0: scale_factor ((grid + offset) / M) mode; offset == 0: size=(grid_h, grid_w).
    Returns `pos_embed` itself when the stored grid already matches a square target.
    """
    stored = pos_embed.shape[1] - num_prefix
    side = math.isqrt(stored)
    if grid_h == grid_w == side:
        return pos_embed
    dtype = pos_embed.dtype
    dim = pos_embed.shape[-1]
    prefix = pos_embed[:, :num_prefix].float()
    grid = pos_embed[:, num_prefix:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    if offset:
        scale = ((grid_h + offset) / side, (grid_w + offset) / side)
        resized = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=antialias)
    else:
        resized = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=antialias)
    patches = resized.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat((prefix, patches), dim=1).to(dtype)
