"""Image to patch tokens: one strided convolution (official key `patch_embed.proj`)."""

from __future__ import annotations

import torch
from torch import nn

from lvdtool.errors import InputError


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, D), patches in row-major order."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise InputError(f"image size {height}x{width} is not a multiple of patch_size={p}")
        return self.proj(x).flatten(2).transpose(1, 2)
