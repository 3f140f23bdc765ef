"""Shared by the recorder and the tests: the released DINOv3 ViTs, their deterministic test
weights and inputs.

The official code cannot be installed here (it is not on PyPI), so its outputs were recorded once
by `record.py` (run against a checkout of facebookresearch/dinov3) and stored next to this file.
Weights are not stored: every parameter is regenerated from its key name by `make_weights`, on
both sides, and the buffers (`rope_embed.periods`, `qkv.bias_mask`) are the official model's own,
saved in the records.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).parent
SEED = 20261201
IMAGE_SIZES = ((224, 224), (48, 80))  # square, and a non-square 3 x 5 grid
TRAIN_CROPS = ((2, 64, 64), (3, 32, 48))  # (batch, H, W) of a global and a local crop batch
PATCH_STRIDE_224 = 7  # the 224 px record keeps every 7th patch token (28 of 196)

_HUB = dict(img_size=224, patch_size=16, in_chans=3, pos_embed_rope_base=100, pos_embed_rope_normalize_coords="separate",
            pos_embed_rope_rescale_coords=2, pos_embed_rope_dtype="fp32", drop_path_rate=0.0, layerscale_init=1.0e-05,
            norm_layer="layernormbf16", ffn_bias=True, proj_bias=True, n_storage_tokens=4, mask_k_bias=True)


@dataclass(frozen=True)
class Released:
    """One released DINOv3 ViT: the official constructor arguments (hub/backbones.py) and the
    depth/width the output record uses (the full model where a CPU test can afford it)."""

    arch: str  # lvd's registered name
    official: dict[str, Any]
    record_depth: int
    record_width: tuple[int, int] | None = None  # (embed_dim, num_heads) of a narrowed record, else the real one

    def official_kwargs(self, full: bool) -> dict[str, Any]:
        kwargs = {**_HUB, **self.official}
        if not full:
            kwargs["depth"] = self.record_depth
            if self.record_width:
                kwargs["embed_dim"], kwargs["num_heads"] = self.record_width
        return kwargs

    def lvd_overrides(self) -> dict[str, Any]:
        """Config overrides that make lvd's registered arch the recorded (reduced) model."""
        out: dict[str, Any] = {"depth": self.record_depth}
        if self.record_width:
            out["embed_dim"], out["num_heads"] = self.record_width
        return out


def _vit(dim: int, depth: int, heads: int, ratio: float, ffn: str = "mlp", **extra: Any) -> dict[str, Any]:
    return {"embed_dim": dim, "depth": depth, "num_heads": heads, "ffn_ratio": ratio, "ffn_layer": ffn, "qkv_bias": True, **extra}


RELEASED = (
    Released("vit_s16_v3", _vit(384, 12, 6, 4), record_depth=12),
    Released("vit_s16plus_v3", _vit(384, 12, 6, 6, "swiglu"), record_depth=12),
    Released("vit_b16_v3", _vit(768, 12, 12, 4), record_depth=3),
    Released("vit_l16_v3", _vit(1024, 24, 16, 4), record_depth=2),
    Released("vit_l16_v3_sat", _vit(1024, 24, 16, 4, untie_global_and_local_cls_norm=True), record_depth=2),
    Released("vit_l16plus_v3", _vit(1024, 24, 16, 6.0, "swiglu"), record_depth=2),
    Released("vit_h16plus_v3", _vit(1280, 32, 20, 6.0, "swiglu"), record_depth=2),
    # The 7B at full width is 167M parameters per block: the record keeps its structure (128-dim
    # heads, SwiGLU aligned to 64 at ratio 3, no qkv bias, untied local CLS norm) at width 512.
    Released("vit_7b16_v3", _vit(4096, 40, 32, 3, "swiglu64", qkv_bias=False, untie_global_and_local_cls_norm=True),
             record_depth=2, record_width=(512, 4)),
)


def record_path(arch: str) -> Path:
    return HERE / f"{arch}.pt"


LAYOUT_PATH = HERE / "layouts.json"  # official state-dict keys and shapes of each full-size model


def _generator(key: str) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + zlib.crc32(key.encode()))


def make_weights(shapes: dict[str, tuple[int, ...]], buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameters drawn from their key names (scaled so that every block changes the tokens:
    LayerScale near 0.3, norms near 1), buffers as given."""
    state: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key in buffers:
            state[key] = buffers[key].clone()
            continue
        noise = torch.randn(shape, generator=_generator(key))
        if key.endswith("gamma"):
            value = 0.3 + 0.05 * noise
        elif key.endswith(".weight") and len(shape) == 1:  # LayerNorm
            value = 1.0 + 0.1 * noise
        elif key.endswith(".bias"):
            value = 0.1 * noise
        elif len(shape) >= 2 and key.endswith(".weight"):  # linear / conv: unit-variance outputs
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            value = noise / fan_in**0.5
        else:  # tokens
            value = noise
        state[key] = value
    return state


def make_images(size: tuple[int, int], batch: int = 2, salt: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(SEED + 17 * size[0] + size[1] + salt)
    return torch.randn(batch, 3, *size, generator=gen)


def image_batch(size: tuple[int, int]) -> int:
    return 1


BIAS_MASK = "attn.qkv.bias_mask"


def first_buffers(buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a record stores of the buffers: the periods and block 0's key mask (all blocks share it)."""
    return {k: v for k, v in buffers.items() if not k.endswith(BIAS_MASK) or k.startswith("blocks.0.")}


def all_buffers(stored: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """`first_buffers` spread back over every block."""
    mask = stored.get(f"blocks.0.{BIAS_MASK}")
    out = {k: v for k, v in stored.items() if not k.endswith(BIAS_MASK)}
    if mask is not None:
        out.update({k: mask for k in shapes if k.endswith(BIAS_MASK)})
    return out


def keep_patches(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The patch tokens a record keeps: every PATCH_STRIDE_224-th at 224 px, all otherwise."""
    return tokens[:, ::PATCH_STRIDE_224] if size == (224, 224) else tokens
