"""The registered architectures: DINOv2 sizes and hub presets, the released DINOv3 ViTs, tiny test models.

Base names (`vit_small` ... `vit_giant2`) equal the official builders with their defaults
(patch 16, img_size 224). Presets are the names users type: `vit_s14` ... `vit_g14` reproduce
the hub models, patch 14 at img_size 518 (a 37x37 stored position grid, so hub weights load
without resizing); `_reg4` adds 4 register tokens and switches position interpolation to
offset 0 with antialias, as the hub register models; `vit_s16` ... use patch 16 at 224.
"""

from __future__ import annotations

from lvdtool.models.config import BackboneConfig
from lvdtool.models.registry import get_arch_config, register_arch

REGISTER_TOKENS = 4


@register_arch("vit_small", kind="base")
def vit_small() -> BackboneConfig:
    """ViT-S: 21M parameters."""
    return BackboneConfig(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224)


@register_arch("vit_base", kind="base")
def vit_base() -> BackboneConfig:
    """ViT-B: 86M parameters."""
    return BackboneConfig(embed_dim=768, depth=12, num_heads=12, patch_size=16, img_size=224)


@register_arch("vit_large", kind="base")
def vit_large() -> BackboneConfig:
    """ViT-L: 300M parameters."""
    return BackboneConfig(embed_dim=1024, depth=24, num_heads=16, patch_size=16, img_size=224)


@register_arch("vit_giant2", kind="base")
def vit_giant2() -> BackboneConfig:
    """ViT-g (DINOv2's "giant2"): 1.1B parameters, 64 dims per head, SwiGLU FFN."""
    return BackboneConfig(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu", patch_size=16, img_size=224)


def _preset(base: str, patch_size: int, registers: int) -> BackboneConfig:
    img_size = 518 if patch_size == 14 else 224
    return get_arch_config(base).replace(
        patch_size=patch_size,
        img_size=img_size,
        num_register_tokens=registers,
        interpolate_offset=0.0 if registers else 0.1,
        interpolate_antialias=bool(registers),
    )


def _register_presets() -> None:
    # 16 presets from one rule instead of 16 near-identical functions.
    short = {"vit_small": "s", "vit_base": "b", "vit_large": "l", "vit_giant2": "g"}
    for patch_size in (14, 16):
        for base, letter in short.items():
            for registers in (0, REGISTER_TOKENS):
                name = f"vit_{letter}{patch_size}" + (f"_reg{registers}" if registers else "")
                register_arch(name)(lambda b=base, p=patch_size, r=registers: _preset(b, p, r))


_register_presets()


@register_arch("vit_tiny", kind="test")
def vit_tiny() -> BackboneConfig:
    """ViT-Ti width (192) with 4 blocks, 2M parameters, 224 px: demos and quick training runs."""
    return BackboneConfig(embed_dim=192, depth=4, num_heads=3, patch_size=14, img_size=224)


@register_arch("vit_test", kind="test")
def vit_test() -> BackboneConfig:
    """About 45k parameters: 2 blocks of width 32 at 56 px, for unit tests."""
    return BackboneConfig(embed_dim=32, depth=2, num_heads=2, patch_size=14, img_size=56)


@register_arch("vit_mini8", kind="test")
def vit_mini8() -> BackboneConfig:
    """Width 64, 4 blocks of 4 heads, patch 8 at 32 px (a 4x4 grid), LayerScale 1.0, position
    embedding initialised at std 1.0 (not 0.02), about 0.2M
    parameters: the small-data recipe's backbone, sized so that a CPU trains it for thousands of
    iterations in minutes (measured in docs/pretrain.md)."""
    return BackboneConfig(embed_dim=64, depth=4, num_heads=4, patch_size=8, img_size=32, layerscale_init=1.0,
                          pos_embed_init_std=1.0)


@register_arch("vit_micro8", kind="test")
def vit_micro8() -> BackboneConfig:
    """Width 32, 4 blocks of 2 heads, patch 8 at 32 px, LayerScale 1.0, position embedding at std
    1.0: about 55k parameters, a distillation student of the small-data preset's vit_mini8."""
    return BackboneConfig(embed_dim=32, depth=4, num_heads=2, patch_size=8, img_size=32, layerscale_init=1.0,
                          pos_embed_init_std=1.0)


@register_arch("vit_s16plus_reg4", kind="lvd")
def vit_s16plus_reg4() -> BackboneConfig:
    """ViT-S/16 with a SwiGLU FFN of ratio 6 and 4 registers (29M parameters): the DINOv2-family
    form of DINOv3's "ViT-S+" (`vit_s16plus_v3` is the real one, with RoPE and storage tokens)."""
    return _preset("vit_small", 16, REGISTER_TOKENS).replace(ffn="swiglu", mlp_ratio=6.0)


# ---- DINOv3 -------------------------------------------------------------------------------------
# The released DINOv3 ViTs (facebookresearch/dinov3 hub/backbones.py): patch 16, axial RoPE with
# base 100 and training-time coordinate rescaling in [1/2, 2], 4 storage tokens, LayerScale 1e-5,
# LayerNorm eps 1e-5, the key bias masked, CLS and storage tokens initialised at std 0.02.
STORAGE_TOKENS = 4


def _dinov3(embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, ffn: str = "mlp", **extra: object) -> BackboneConfig:
    return BackboneConfig(
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, ffn=ffn,  # type: ignore[arg-type]
        patch_size=16, img_size=224, num_register_tokens=STORAGE_TOKENS, family="dinov3", layer_norm_eps=1e-5,
        token_init_std=0.02, mask_k_bias=True, layerscale_init=1e-5, rope_base=100.0, rope_rescale=2.0,
        **extra,  # type: ignore[arg-type]
    )


@register_arch("vit_s16_v3", kind="dinov3")
def vit_s16_v3() -> BackboneConfig:
    """DINOv3 ViT-S/16 (hub dinov3_vits16): 384 wide, 12 blocks of 6 heads, MLP 4; 21.6M parameters."""
    return _dinov3(384, 12, 6, 4.0)


@register_arch("vit_s16plus_v3", kind="dinov3")
def vit_s16plus_v3() -> BackboneConfig:
    """DINOv3 ViT-S+/16 (dinov3_vits16plus): ViT-S with a SwiGLU FFN of ratio 6 (width 1536); 28.7M."""
    return _dinov3(384, 12, 6, 6.0, "swiglu")


@register_arch("vit_b16_v3", kind="dinov3")
def vit_b16_v3() -> BackboneConfig:
    """DINOv3 ViT-B/16 (dinov3_vitb16): 768 wide, 12 blocks of 12 heads, MLP 4; 85.7M."""
    return _dinov3(768, 12, 12, 4.0)


@register_arch("vit_l16_v3", kind="dinov3")
def vit_l16_v3() -> BackboneConfig:
    """DINOv3 ViT-L/16 (dinov3_vitl16, the LVD-1689M weights): 1024 wide, 24 blocks of 16 heads; 303M.
    The SAT-493M ViT-L has an untied local CLS norm: `vit_l16_v3_sat`."""
    return _dinov3(1024, 24, 16, 4.0)


@register_arch("vit_l16_v3_sat", kind="dinov3")
def vit_l16_v3_sat() -> BackboneConfig:
    """DINOv3 ViT-L/16 of the satellite weights (SAT-493M): `vit_l16_v3` plus `local_cls_norm`."""
    return _dinov3(1024, 24, 16, 4.0, untie_local_cls_norm=True)


@register_arch("vit_l16plus_v3", kind="dinov3")
def vit_l16plus_v3() -> BackboneConfig:
    """DINOv3 ViT-L+/16 (dinov3_vitl16plus): ViT-L with SwiGLU ratio 6 (width 4096); 0.4B."""
    return _dinov3(1024, 24, 16, 6.0, "swiglu")


@register_arch("vit_h16plus_v3", kind="dinov3")
def vit_h16plus_v3() -> BackboneConfig:
    """DINOv3 ViT-H+/16 (dinov3_vith16plus): 1280 wide, 32 blocks of 20 heads, SwiGLU 6 (5120); 0.84B."""
    return _dinov3(1280, 32, 20, 6.0, "swiglu")


@register_arch("vit_7b16_v3", kind="dinov3")
def vit_7b16_v3() -> BackboneConfig:
    """DINOv3 ViT-7B/16 (dinov3_vit7b16): 4096 wide, 40 blocks of 32 heads (128 dims, 32 RoPE
    periods), SwiGLU ratio 3 aligned to 64 (width 8192), no qkv bias, untied local CLS norm; 6.7B."""
    return _dinov3(4096, 40, 32, 3.0, "swiglu", swiglu_align=64, qkv_bias=False, untie_local_cls_norm=True)


@register_arch("vit_test_v3", kind="test")
def vit_test_v3() -> BackboneConfig:
    """A DINOv3-family unit-test model: width 32, 2 blocks of 2 heads (16-dim heads, 4 RoPE
    periods), patch 8 at 32 px, 4 storage tokens; about 32k parameters."""
    return _dinov3(32, 2, 2, 4.0).replace(patch_size=8, img_size=32)


@register_arch("vit_mini8_v3", kind="test")
def vit_mini8_v3() -> BackboneConfig:
    """`vit_mini8` in the DINOv3 family: width 64, 4 blocks of 4 heads (16-dim heads, 4 RoPE
    periods), patch 8 at 32 px, 4 storage tokens, LayerScale 1.0; about 0.2M parameters. The
    small-data recipe's backbone with RoPE (measured in docs/dinov3.md)."""
    return _dinov3(64, 4, 4, 4.0).replace(patch_size=8, img_size=32, layerscale_init=1.0)
