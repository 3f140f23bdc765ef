"""Pre-norm transformer block (official keys norm1, attn, ls1, norm2, mlp, ls2)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from lvdtool.models.config import BackboneConfig
from lvdtool.models.layers.attention import Attention
from lvdtool.models.layers.layer_scale import LayerScale
from lvdtool.models.layers.mlp import Mlp
from lvdtool.models.layers.rope import Table
from lvdtool.models.layers.stochastic_depth import BlockDrop, add_residual
from lvdtool.models.layers.swiglu import SwiGLU
from lvdtool.models.token_layout import TokenLayout

LAYER_NORM_EPS = 1e-6  # DINOv2; a config may say otherwise (DINOv3: 1e-5)


class Block(nn.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))), on packed (rows, D) tokens.

    Stochastic depth is not decided here: the caller passes the block's pre-drawn `BlockDrop`
    (see `stochastic_depth`), so a whole multi-crop forward shares one reproducible plan.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = Attention(dim, config.num_heads, config.qkv_bias, config.proj_bias, config.attention_backend,
                              mask_k_bias=config.mask_k_bias)
        self.ls1: nn.Module = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        if config.ffn == "swiglu":
            # DINOv2 checkpoints store the fused input projection `w12`, DINOv3 ones `w1` and `w2`.
            self.mlp: nn.Module = SwiGLU(dim, config.hidden_dim, bias=config.ffn_bias, fused=config.family == "dinov2")
        else:
            self.mlp = Mlp(dim, config.hidden_dim, bias=config.ffn_bias)
        self.ls2: nn.Module = nn.Identity()
        if config.layerscale_init is not None:
            self.ls1 = LayerScale(dim, config.layerscale_init)
            self.ls2 = LayerScale(dim, config.layerscale_init)

    def attn_branch(self, x: torch.Tensor, layout: TokenLayout, rope: Sequence[Table] | None = None) -> torch.Tensor:
        return self.ls1(self.attn(self.norm1(x), layout, rope))

    def ffn_branch(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        return self.ls2(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, layout: TokenLayout | None = None, drop: BlockDrop | None = None,
                rope: Sequence[Table] | None = None) -> torch.Tensor:
        """`x` is (rows, D) described by `layout`, or a plain (B, N, D) batch when layout is None.

        `rope`: one RoPE table per crop batch (RoPE backbones). It is per crop batch, not per
        image, so it stays valid for the image subsets that stochastic depth keeps.
        """
        if layout is None:
            batch, seq_len, dim = x.shape
            out = self(x.reshape(batch * seq_len, dim), TokenLayout.single(batch, seq_len), drop, rope)
            return out.view(batch, seq_len, dim)
        attn = self.attn_branch if rope is None else partial(self.attn_branch, rope=rope)
        x = add_residual(x, layout, attn, drop.attn if drop else None)
        return add_residual(x, layout, self.ffn_branch, drop.ffn if drop else None)
