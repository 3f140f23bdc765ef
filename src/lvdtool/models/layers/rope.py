"""Axial rotary position embedding of the DINOv3 backbones (official buffer `rope_embed.periods`).

A patch at row i, column j of an H x W grid gets coordinates y = 2 (i + 0.5) / H - 1 and
x = 2 (j + 0.5) / W - 1 ("separate"; "min"/"max" divide both by the shorter/longer side). With
F = head_dim / 4 periods p_k = base^(k / F), the angles of a patch are
2 pi [y / p_0 .. y / p_{F-1}, x / p_0 .. x / p_{F-1}], tiled twice to head_dim, and each head's
q and k of the patch tokens are rotated: q' = q cos + rotate_half(q) sin, rotate_half([a, b]) =
[-b, a] over the two halves. The CLS and storage tokens in front are not rotated.

In training mode the coordinates can be augmented (shift, per-axis jitter, one rescale factor);
like the official model each block draws its own factors for each crop batch, but lvd draws the
factors of all blocks in one go before the forward, so the tables are built once per crop batch
and block, never per token. In eval mode the table of a grid is built once per forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn

Table = tuple[torch.Tensor, torch.Tensor]  # (sin, cos), each (H*W, head_dim)
Grid = tuple[int, int]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def rotate(x: torch.Tensor, table: Table) -> torch.Tensor:
    """x (..., P, head_dim) rotated by a (P, head_dim) or broadcastable table, in the table's dtype."""
    sin, cos = table
    x = x.to(sin.dtype)
    return x * cos + rotate_half(x) * sin


def apply_rope(q: torch.Tensor, k: torch.Tensor, table: Table) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k (B, heads, N, head_dim): rotate the last P = table rows' tokens; the N - P prefix tokens
    (CLS, storage) stay as they are. Returned in q's dtype."""
    patches = table[0].shape[-2]
    prefix = q.shape[-2] - patches
    if prefix < 0:
        raise ValueError(f"RoPE table covers {patches} patches but the sequence has {q.shape[-2]} tokens")
    out = []
    for t in (q, k):
        rotated = rotate(t[..., prefix:, :], table).to(t.dtype)
        out.append(torch.cat((t[..., :prefix, :], rotated), dim=-2) if prefix else rotated)
    return out[0], out[1]


class RopeEmbedding(nn.Module):
    def __init__(self, head_dim: int, base: float = 100.0, normalize: str = "separate", shift: float | None = None,
                 jitter: float | None = None, rescale: float | None = None, dtype: str = "fp32") -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        self.normalize = normalize
        self.shift, self.jitter, self.rescale = shift, jitter, rescale
        self.dtype = _DTYPES[dtype]
        # Persistent, as the official model (a teacher is initialised from the student's state).
        self.register_buffer("periods", torch.empty(head_dim // 4, dtype=self.dtype), persistent=True)
        self.reset_periods()

    @torch.no_grad()
    def reset_periods(self) -> None:
        quarter = self.head_dim // 4
        exponent = 2 * torch.arange(quarter, dtype=self.dtype) / (self.head_dim // 2)
        self.periods.copy_(self.base ** exponent)

    @property
    def augments(self) -> bool:
        return self.training and any(v is not None for v in (self.shift, self.jitter, self.rescale))

    def coords(self, grid: Grid) -> torch.Tensor:
        """(H*W, 2) patch-centre coordinates (y, x) in [-1, 1], row-major."""
        height, width = grid
        opts = {"device": self.periods.device, "dtype": self.dtype}
        if self.normalize == "separate":
            div_h, div_w = height, width
        else:
            div_h = div_w = max(height, width) if self.normalize == "max" else min(height, width)
        ys = torch.arange(0.5, height, **opts) / div_h
        xs = torch.arange(0.5, width, **opts) / div_w
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)
        return 2.0 * coords - 1.0

    def table(self, coords: torch.Tensor) -> Table:
        angles = 2 * math.pi * coords[:, :, None] / self.periods.to(self.dtype)[None, None, :]
        angles = angles.flatten(1, 2).tile(2)  # (P, head_dim)
        return torch.sin(angles), torch.cos(angles)

    def draw_factors(self, n_blocks: int, n_groups: int) -> dict[str, torch.Tensor]:
        """The training-time coordinate augmentations of every block and crop batch, in one draw
        per kind: shift (blocks, groups, 2), jitter (blocks, groups, 2), rescale (blocks, groups, 1)."""
        opts = {"device": self.periods.device, "dtype": self.dtype}
        out: dict[str, torch.Tensor] = {}
        if self.shift is not None:
            out["shift"] = torch.empty(n_blocks, n_groups, 2, **opts).uniform_(-self.shift, self.shift)
        for name, axes in (("jitter", 2), ("rescale", 1)):
            value = getattr(self, name)
            if value is not None:
                top = math.log(value)
                out[name] = torch.empty(n_blocks, n_groups, axes, **opts).uniform_(-top, top).exp()
        return out

    def tables(self, grids: list[Grid], n_blocks: int) -> list[list[Table]]:
        """tables[block][group]: the (sin, cos) of each crop batch's grid for each block.

        Eval mode (or no augmentation): one table per distinct grid, shared by all blocks.
        """
        if not self.augments:
            cache: dict[Grid, Table] = {}
            for grid in grids:
                if grid not in cache:
                    cache[grid] = self.table(self.coords(grid))
            return [[cache[g] for g in grids]] * n_blocks
        factors = self.draw_factors(n_blocks, len(grids))
        base = [self.coords(g) for g in grids]
        out: list[list[Table]] = []
        for block in range(n_blocks):
            row = []
            for group, coords in enumerate(base):
                if "shift" in factors:
                    coords = coords + factors["shift"][block, group]
                if "jitter" in factors:
                    coords = coords * factors["jitter"][block, group]
                if "rescale" in factors:
                    coords = coords * factors["rescale"][block, group]
                row.append(self.table(coords))
            out.append(row)
        return out
