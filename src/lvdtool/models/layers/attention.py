"""Multi-head self-attention over packed tokens (official keys `qkv`, `proj`)."""

from __future__ import annotations

import torch
from torch import nn

from lvdtool.models.layers.attention_backend import attend
from lvdtool.models.token_layout import TokenLayout


class Attention(nn.Module):
    """Self-attention on (rows, D) tokens; each crop batch in `layout` attends within itself.

    The qkv and output projections are token-wise, so they run once over all rows; only the
    softmax attention itself is called per group of equal-length sequences.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 backend: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        rows, dim = x.shape
        qkv = self.qkv(x)
        outputs = []
        for span in layout.attention_spans():
            # (B*N, 3D) -> (3, B, heads, N, head_dim) as a strided view: no copy before SDPA.
            part = qkv[span.start:span.stop].view(span.batch, span.seq_len, 3, self.num_heads, self.head_dim)
            q, k, v = part.permute(2, 0, 3, 1, 4).unbind(0)
            out = attend(q, k, v, self.backend)
            outputs.append(out.transpose(1, 2).reshape(span.batch * span.seq_len, dim))
        if len(outputs) == 1:
            merged = outputs[0]
        else:  # also covers an empty layout (no rows)
            merged = torch.cat(outputs, dim=0) if outputs else x.new_zeros(0, dim)
        return self.proj(merged)
