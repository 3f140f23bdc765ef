"""SwiGLU FFN: gate and value projections, SiLU(gate) * value, output projection.

DINOv2 checkpoints hold one fused input projection `w12` (gate rows first); DINOv3 checkpoints
hold them apart as `w1` (gate) and `w2` (value). Both compute w3(silu(x W1^T) * (x W2^T)).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, bias: bool = True, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            # One (2*hidden, dim) matmul instead of two: fewer kernel launches, same math.
            self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        else:
            self.w1 = nn.Linear(dim, hidden_dim, bias=bias)
            self.w2 = nn.Linear(dim, hidden_dim, bias=bias)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            gate, value = self.w12(x).chunk(2, dim=-1)
        else:
            gate, value = self.w1(x), self.w2(x)
        return self.w3(F.silu(gate) * value)
