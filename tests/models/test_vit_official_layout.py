"""Each preset's parameters are the hub checkpoint's keys and shapes; hub-shaped weights load."""

from __future__ import annotations

import pytest
import torch

from lvdtool.models import build_backbone, get_arch_config, infer_backbone_config, list_archs, load_backbone, match_arch

# Fact-sheet dims: (embed_dim, depth, ffn, hidden width of the FFN)
SIZES = {"s": (384, 12, "mlp", 1536), "b": (768, 12, "mlp", 3072), "l": (1024, 24, "mlp", 4096),
         "g": (1536, 40, "swiglu", 4096)}


def preset_layout(layout_table, name: str) -> dict[str, tuple[int, ...]]:
    letter, patch = name[4], int(name[5:7])
    dim, depth, ffn, hidden = SIZES[letter]
    grid = 37 if patch == 14 else 14  # hub models: 518 px / 14; patch-16 presets: 224 px / 16
    return layout_table(dim=dim, depth=depth, patch=patch, grid=grid,
                        registers=4 if name.endswith("_reg4") else 0, ffn=ffn, hidden=hidden)


@pytest.mark.parametrize("name", list_archs("preset"))
def test_preset_parameters_are_the_official_layout(layout_table, name: str) -> None:
    with torch.device("meta"):  # shapes without allocating (ViT-g is 1.1B parameters)
        model = build_backbone(name)
    want = preset_layout(layout_table, name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == want
    assert not list(model.buffers())  # nothing outside the official keys
    # And the architecture read back from those shapes is the same preset.
    meta_state = {k: torch.empty(shape, device="meta") for k, shape in want.items()}
    inferred = infer_backbone_config(meta_state)
    assert inferred.structure() == get_arch_config(name).structure()
    assert match_arch(inferred) == name


@pytest.mark.parametrize("name", ["vit_s14", "vit_s14_reg4"])
def test_full_size_hub_shaped_weights_load_strictly(layout_table, name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) * 0.02 for k, shape in preset_layout(layout_table, name).items()}
    model = load_backbone(state)
    assert model.config.arch == name and model.config.img_size == 518
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    out = model.eval()(torch.randn(1, 3, 224, 224))  # 16x16 patches from the 37x37 stored grid
    assert out["x_norm_patchtokens"].shape == (1, 256, 384)
    assert torch.isfinite(out["x_prenorm"]).all()
