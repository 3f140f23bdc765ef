"""Multi-head self-attention over packed tokens (official keys `qkv`, `proj`; DINOv3 `qkv.bias_mask`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lvdtool.models.layers.attention_backend import attend
from lvdtool.models.layers.rope import Table, apply_rope
from lvdtool.models.token_layout import AttentionSpan, TokenLayout


class KeyMaskedBiasLinear(nn.Linear):
    """The DINOv3 qkv projection: its bias times a stored 0/1 `bias_mask` that zeroes the key third
    (the official checkpoints hold the mask, so it is a persistent buffer)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if bias:
            mask = torch.ones(out_features)
            mask[out_features // 3 : 2 * out_features // 3] = 0
            self.register_buffer("bias_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_mask.to(self.bias.dtype)
        return F.linear(x, self.weight, bias)


def span_table(span: AttentionSpan, layout: TokenLayout, tables: Sequence[Table]) -> Table:
    """The RoPE table of a span: shared when all its crop batches use the same one, else one per image."""
    first = tables[span.groups[0]]
    if all(tables[g] is first for g in span.groups):
        return first
    parts = [[t.unsqueeze(0).expand(layout.groups[g][0], 1, *t.shape) for t in tables[g]] for g in span.groups]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class Attention(nn.Module):
    """Self-attention on (rows, D) tokens; each crop batch in `layout` attends within itself.

    The qkv and output projections are token-wise, so they run once over all rows; only the
    softmax attention itself is called per group of equal-length sequences.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 backend: str = "sdpa", mask_k_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.backend = backend
        self.qkv = (KeyMaskedBiasLinear if mask_k_bias else nn.Linear)(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, layout: TokenLayout, rope: Sequence[Table] | None = None) -> torch.Tensor:
        """`rope`: one (sin, cos) table per crop batch of `layout` (RoPE backbones), else None."""
        rows, dim = x.shape
        qkv = self.qkv(x)
        outputs = []
        for span in layout.attention_spans():
            # (B*N, 3D) -> (3, B, heads, N, head_dim) as a strided view: no copy before SDPA.
            part = qkv[span.start:span.stop].view(span.batch, span.seq_len, 3, self.num_heads, self.head_dim)
            q, k, v = part.permute(2, 0, 3, 1, 4).unbind(0)
            if rope is not None:
                q, k = apply_rope(q, k, span_table(span, layout, rope))
            out = attend(q, k, v, self.backend)
            outputs.append(out.transpose(1, 2).reshape(span.batch * span.seq_len, dim))
        if len(outputs) == 1:
            merged = outputs[0]
        else:  # also covers an empty layout (no rows)
            merged = torch.cat(outputs, dim=0) if outputs else x.new_zeros(0, dim)
        return self.proj(merged)
