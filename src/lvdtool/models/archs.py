"""The registered architectures: DINOv2 sizes, hub presets, and tiny test models.

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
    form of DINOv3's distilled "ViT-S+" student (which has RoPE instead of a learned position
    embedding; that family comes with lvd's DINOv3 support)."""
    return _preset("vit_small", 16, REGISTER_TOKENS).replace(ffn="swiglu", mlp_ratio=6.0)
