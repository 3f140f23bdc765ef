"""Every registered architecture builds, runs forward and backward at a tiny size."""

from __future__ import annotations

import pytest
import torch

from lvdtool.errors import ConfigError
from lvdtool.models import BackboneConfig, build_backbone, get_arch_config, list_archs, register_arch
from lvdtool.models import registry
from lvdtool.models.layers import Mlp, SwiGLU

PRESETS = [
    f"vit_{size}{patch}{reg}" for patch in (14, 16) for size in "sblg" for reg in ("", "_reg4")
]
BASES = ["vit_small", "vit_base", "vit_large", "vit_giant2"]


def tiny(name: str, **overrides: object) -> torch.nn.Module:
    """The arch shrunk to width 32 / 2 blocks / 4x4 grid, keeping FFN kind, patch and registers."""
    patch = get_arch_config(name).patch_size
    return build_backbone(name, embed_dim=32, depth=2, num_heads=2, img_size=4 * patch, **overrides)


def test_all_user_facing_names_are_registered() -> None:
    names = list_archs()
    for name in PRESETS + BASES + ["vit_tiny", "vit_test"]:
        assert name in names
    assert set(list_archs("preset")) == set(PRESETS)
    assert set(list_archs("base")) == set(BASES)


@pytest.mark.parametrize("name", list_archs())
def test_tiny_forward_backward_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = tiny(name)
    full = get_arch_config(name)
    patch, regs = full.patch_size, full.num_register_tokens
    assert model.config.ffn == full.ffn and model.config.num_register_tokens == regs
    assert isinstance(model.blocks[0].mlp, SwiGLU if full.ffn == "swiglu" else Mlp)
    assert model.config.arch == name
    # Non-square input: 3 x 5 patches, so the position embedding is interpolated.
    x = torch.randn(2, 3, 3 * patch, 5 * patch)
    masks = torch.zeros(2, 15, dtype=torch.bool)
    masks[:, ::2] = True
    out = model(x, masks=masks)
    assert out["x_norm_clstoken"].shape == (2, 32)
    assert out["x_norm_regtokens"].shape == (2, regs, 32)
    assert out["x_norm_patchtokens"].shape == (2, 15, 32)
    assert out["x_prenorm"].shape == (2, 1 + regs + 15, 32)
    assert out["masks"] is masks
    loss = out["x_norm_clstoken"].square().sum() + out["x_norm_patchtokens"].square().sum()
    loss.backward()
    for param_name, param in model.named_parameters():
        if param_name.startswith("local_cls_norm."):  # DINOv3: only a second (local) crop batch uses it
            assert param.grad is None
            continue
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
    assert model.mask_token.grad.abs().sum() > 0  # masks were used
    if regs:
        assert model.extra_tokens.grad.abs().sum() > 0


def test_hub_preset_facts() -> None:
    g14 = get_arch_config("vit_g14")
    assert (g14.embed_dim, g14.depth, g14.num_heads, g14.ffn, g14.head_dim) == (1536, 40, 24, "swiglu", 64)
    assert (g14.patch_size, g14.img_size, g14.grid_size) == (14, 518, 37)
    for size in "sblg":
        plain, reg = get_arch_config(f"vit_{size}14"), get_arch_config(f"vit_{size}14_reg4")
        assert (plain.num_register_tokens, plain.interpolate_offset, plain.interpolate_antialias) == (0, 0.1, False)
        assert (reg.num_register_tokens, reg.interpolate_offset, reg.interpolate_antialias) == (4, 0.0, True)
        assert plain.layerscale_init == 1e-5 and plain.drop_path_rate == 0.0
    assert get_arch_config("vit_l16").patch_size == 16
    for name, dims in {"vit_s14": (384, 12, 6), "vit_b14": (768, 12, 12), "vit_l14": (1024, 24, 16)}.items():
        config = get_arch_config(name)
        assert (config.embed_dim, config.depth, config.num_heads, config.ffn) == (*dims, "mlp")


@pytest.mark.parametrize("name,millions", [("vit_s14", 21), ("vit_b14", 86), ("vit_l14", 300), ("vit_g14", 1100)])
def test_parameter_counts_match_the_paper(name: str, millions: int) -> None:
    with torch.device("meta"):  # no allocation, even for the 1.1B model
        model = build_backbone(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - millions) / millions < 0.06  # the 37x37 position grid adds 0.5M to S/14


def test_overrides_and_errors() -> None:
    model = build_backbone("vit_test", drop_path_rate=0.3, num_register_tokens=4)
    assert model.config.drop_path_rate == 0.3 and model.register_tokens.shape == (1, 4, 32)
    with pytest.raises(ConfigError, match="vit_nope"):
        build_backbone("vit_nope")
    with pytest.raises(ConfigError, match="embed_dims"):
        build_backbone("vit_test", embed_dims=64)
    with pytest.raises(ConfigError, match="num_heads"):
        build_backbone("vit_test", num_heads=5)
    with pytest.raises(ConfigError, match="img_size"):
        build_backbone("vit_test", img_size=50)
    with pytest.raises(ConfigError, match="drop_path_rate"):
        build_backbone("vit_test", drop_path_rate=1.0)
    with pytest.raises(ConfigError, match="ffn"):
        build_backbone("vit_test", ffn="moe")


def test_register_arch_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_ARCHS", dict(registry._ARCHS))  # keep the real table clean

    @register_arch("vit_custom_for_test", kind="test")
    def custom() -> BackboneConfig:
        return BackboneConfig(embed_dim=48, depth=1, num_heads=3, patch_size=8, img_size=32)

    assert "vit_custom_for_test" in list_archs()
    model = build_backbone("vit_custom_for_test")
    assert model.patch_embed.proj.weight.shape == (48, 3, 8, 8) and len(model.blocks) == 1
    with pytest.raises(ConfigError, match="twice"):
        register_arch("vit_custom_for_test")(custom)


def test_drop_path_rates_uniform_or_linear() -> None:
    config = get_arch_config("vit_tiny", drop_path_rate=0.3)
    assert config.drop_path_rates() == [0.3] * 4
    linear = config.replace(drop_path_uniform=False).drop_path_rates()
    assert linear[0] == 0.0 and linear[-1] == pytest.approx(0.3) and linear == sorted(linear)
