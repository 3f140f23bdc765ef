"""Typed configuration of a DINOv2 Vision Transformer backbone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from lvdtool.errors import ConfigError

FfnKind = Literal["mlp", "swiglu"]
AttentionBackend = Literal["sdpa", "xformers"]


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
            # Official rule: 2/3 of the MLP width (same parameter count), rounded up to 8.
            return (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    def drop_path_rates(self) -> list[float]:
        """Per-block stochastic-depth rates: uniform (DINOv2) or linearly increasing."""
        if self.drop_path_uniform or self.depth == 1:
            return [self.drop_path_rate] * self.depth
        step = self.drop_path_rate / (self.depth - 1)
        return [i * step for i in range(self.depth)]

    def structure(self) -> tuple[Any, ...]:
        """The fields that fix the weight layout and the computed function (not training knobs)."""
        return (
            self.embed_dim,
            self.depth,
            self.num_heads,
            self.ffn,
            self.hidden_dim,
            self.patch_size,
            self.img_size,
            self.in_chans,
            self.num_register_tokens,
            self.interpolate_offset,
            self.interpolate_antialias,
            self.layerscale_init is not None,
            self.qkv_bias,
            self.proj_bias,
            self.ffn_bias,
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
