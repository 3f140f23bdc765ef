"""Typed configuration of a Vision Transformer backbone of the DINOv2 or the DINOv3 family.

The two families share every layer; they differ in how a patch knows where it is (a learned,
interpolated position embedding vs. axial RoPE on q/k), in the key layout of their checkpoints
(`register_tokens` vs `storage_tokens`, fused `w12` vs split `w1`/`w2` SwiGLU, `pos_embed` vs
`rope_embed.periods`, `qkv.bias_mask`), and in a few constants (LayerNorm eps, token init).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from lvdtool.errors import ConfigError

FfnKind = Literal["mlp", "swiglu"]
AttentionBackend = Literal["sdpa", "xformers"]
Family = Literal["dinov2", "dinov3"]
RopeNormalize = Literal["separate", "min", "max"]
FAMILIES = ("dinov2", "dinov3")
ROPE_NORMALIZE = ("separate", "min", "max")
ROPE_DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to build a `VisionTransformer`.

    Structural fields (dims, FFN, patch, registers, interpolation) decide the weight layout and
    the function computed; `drop_path_*` and `attention_backend` only change training/speed.
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    ffn: FfnKind = "mlp"
    # Explicit FFN hidden width; None derives it from mlp_ratio (and the SwiGLU 2/3 rule).
    ffn_hidden_dim: int | None = None
    patch_size: int = 14
    img_size: int = 518
    in_chans: int = 3
    num_register_tokens: int = 0
    # Position-embedding interpolation: the no-register hub models use offset 0.1 (scale-factor
    # mode) without antialias; the register models use offset 0 (explicit size) with antialias.
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    drop_path_rate: float = 0.0
    drop_path_uniform: bool = True
    # None builds blocks without LayerScale (no `ls1`/`ls2` keys), as official init_values=None.
    layerscale_init: float | None = 1e-5
    # Init std of the learned position embedding (init only; 0.02 official). At 0.02 it is ~100x
    # smaller than the patch tokens, so a small model starts (and, in a short run, stays) nearly
    # blind to where a patch is: the small-data backbone starts at 1.0 (docs/pretrain.md).
    pos_embed_init_std: float = 0.02
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    attention_backend: AttentionBackend = "sdpa"
    # dinov2: learned position embedding, `register_tokens`, fused SwiGLU `w12`.
    # dinov3: axial RoPE (no position parameters), `storage_tokens`, split SwiGLU `w1`/`w2`.
    family: Family = "dinov2"
    layer_norm_eps: float = 1e-6  # DINOv3's "layernormbf16" is eps 1e-5
    token_init_std: float = 1e-6  # CLS and register/storage tokens (DINOv3: 0.02)
    swiglu_align: int = 8  # SwiGLU width: 2/3 of the MLP width rounded up to this (DINOv3 7B: 64)
    # DINOv3 attention: the qkv bias is multiplied by a stored 0/1 mask that zeroes the key third.
    mask_k_bias: bool = False
    # DINOv3 norms: a separate final norm for the CLS + storage tokens of the second crop batch
    # (the local crops) in training only; a separate final norm for CLS + storage tokens always.
    untie_local_cls_norm: bool = False
    untie_cls_norm: bool = False
    # DINOv3 RoPE: periods base^(k/F), k < F = head_dim/4; coordinates in [-1, 1] per axis
    # ("separate") or divided by the longer/shorter side; training-only coordinate augmentations
    # (None: off): shift by U(-s, s) per axis, jitter by a log-uniform factor in [1/j, j] per
    # axis, rescale by one log-uniform factor in [1/r, r] (the released models: r = 2).
    rope_base: float = 100.0
    rope_normalize: RopeNormalize = "separate"
    rope_shift: float | None = None
    rope_jitter: float | None = None
    rope_rescale: float | None = None
    rope_dtype: str = "fp32"  # the dtype q/k are rotated in (the hub models: fp32)
    # Name the config was built from (informational; `describe_backbone` re-derives it).
    arch: str = "custom"

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"backbone config field '{field}'={getattr(self, field)!r}: {why}")

        for field in ("embed_dim", "depth", "num_heads", "patch_size", "img_size", "in_chans"):
            if int(getattr(self, field)) <= 0:
                raise bad(field, "must be a positive integer")
        if self.embed_dim % self.num_heads != 0:
            raise bad("num_heads", f"must divide embed_dim={self.embed_dim}")
        if self.ffn not in ("mlp", "swiglu"):
            raise bad("ffn", "must be 'mlp' or 'swiglu'")
        if self.ffn_hidden_dim is not None and self.ffn_hidden_dim <= 0:
            raise bad("ffn_hidden_dim", "must be positive or None")
        if self.mlp_ratio <= 0:
            raise bad("mlp_ratio", "must be positive")
        if self.img_size % self.patch_size != 0:
            raise bad("img_size", f"must be a multiple of patch_size={self.patch_size}")
        if self.num_register_tokens < 0:
            raise bad("num_register_tokens", "must be >= 0")
        if not 0.0 <= self.interpolate_offset < 1.0:
            raise bad("interpolate_offset", "must be in [0, 1): it nudges the target grid size")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise bad("drop_path_rate", "must be in [0, 1)")
        if not self.pos_embed_init_std > 0:
            raise bad("pos_embed_init_std", "must be positive")
        if self.layerscale_init is not None and self.layerscale_init <= 0:
            raise bad("layerscale_init", "must be positive or None")
        if self.attention_backend not in ("sdpa", "xformers"):
            raise bad("attention_backend", "must be 'sdpa' or 'xformers'")
        if self.family not in FAMILIES:
            raise bad("family", f"must be one of {', '.join(FAMILIES)}")
        if not self.layer_norm_eps > 0:
            raise bad("layer_norm_eps", "must be positive")
        if not self.token_init_std > 0:
            raise bad("token_init_std", "must be positive")
        if self.swiglu_align <= 0:
            raise bad("swiglu_align", "must be a positive integer")
        if self.family == "dinov3":
            if self.embed_dim % (4 * self.num_heads):
                raise bad("num_heads", f"RoPE needs head_dim = embed_dim / num_heads divisible by 4 "
                                       f"(embed_dim={self.embed_dim})")
            if not self.rope_base > 1:
                raise bad("rope_base", "must be > 1")
            if self.rope_normalize not in ROPE_NORMALIZE:
                raise bad("rope_normalize", f"must be one of {', '.join(ROPE_NORMALIZE)}")
            if self.rope_dtype not in ROPE_DTYPES:
                raise bad("rope_dtype", f"must be one of {', '.join(ROPE_DTYPES)}")
            if self.rope_shift is not None and not self.rope_shift > 0:
                raise bad("rope_shift", "must be positive or None (off)")
            for name in ("rope_jitter", "rope_rescale"):
                if getattr(self, name) is not None and not getattr(self, name) >= 1:
                    raise bad(name, "must be >= 1 (a factor range [1/x, x]) or None (off)")
        elif self.mask_k_bias or self.untie_local_cls_norm or self.untie_cls_norm:
            raise bad("family", "mask_k_bias and the untied norms exist only in the dinov3 family")

    @property
    def rope(self) -> bool:
        return self.family == "dinov3"

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid_size(self) -> int:
        """Side of the patch grid the stored position embedding covers."""
        return self.img_size // self.patch_size

    @property
    def hidden_dim(self) -> int:
        """FFN hidden width (for SwiGLU: the width of each of the two halves)."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.ffn == "swiglu":
            # Official rule: 2/3 of the MLP width (same parameter count), rounded up to the
            # alignment (8; DINOv3's "swiglu64" 64).
            width, align = int(hidden * 2 / 3), self.swiglu_align
            return -(-width // align) * align
        return hidden

    def drop_path_rates(self) -> list[float]:
        """Per-block stochastic-depth rates: uniform (DINOv2) or linearly increasing."""
        if self.drop_path_uniform or self.depth == 1:
            return [self.drop_path_rate] * self.depth
        step = self.drop_path_rate / (self.depth - 1)
        return [i * step for i in range(self.depth)]

    def structure(self) -> tuple[Any, ...]:
        """The fields that fix the weight layout and the computed function (not training knobs).

        A RoPE backbone stores no position grid: its img_size and interpolation rule are inert.
        """
        learned_pos = None if self.rope else (self.img_size, self.interpolate_offset, self.interpolate_antialias)
        return (
            self.embed_dim,
            self.depth,
            self.num_heads,
            self.ffn,
            self.hidden_dim,
            self.patch_size,
            learned_pos,
            self.in_chans,
            self.num_register_tokens,
            self.layerscale_init is not None,
            self.qkv_bias,
            self.proj_bias,
            self.ffn_bias,
            self.family,
            self.layer_norm_eps,
            self.mask_k_bias and self.qkv_bias,  # without a qkv bias the mask has nothing to mask
            self.untie_local_cls_norm,
            self.untie_cls_norm,
            (self.rope_base, self.rope_normalize) if self.rope else None,
        )

    def replace(self, **overrides: Any) -> BackboneConfig:
        """A copy with some fields changed; unknown field names raise ConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in overrides:
            if name not in known:
                raise ConfigError(f"unknown backbone config field '{name}' (known: {', '.join(sorted(known))})")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
