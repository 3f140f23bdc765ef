"""SwiGLU FFN (official keys `w12`, `w3`): one fused input projection split into gate and value."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        # One (2*hidden, dim) matmul instead of two: fewer kernel launches, same math.
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)
