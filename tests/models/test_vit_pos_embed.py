"""Position-embedding interpolation, checked against the fact sheet's description of the hub code."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lvdtool.models import build_backbone


def expected_patch_pos(pos_embed: torch.Tensor, grid_h: int, grid_w: int, registers: bool) -> torch.Tensor:
    """Written from RECIPE.md: bicubic in float32; no registers: scale factor (g + 0.1) / M,
    no antialias; registers: explicit size, antialias on."""
    dim = pos_embed.shape[-1]
    side = int((pos_embed.shape[1] - 1) ** 0.5)
    grid = pos_embed[0, 1:].float().reshape(side, side, dim).permute(2, 0, 1)[None]
    if registers:
        out = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True)
    else:
        scale = ((grid_h + 0.1) / side, (grid_w + 0.1) / side)
        out = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    return out[0].permute(1, 2, 0).reshape(grid_h * grid_w, dim)


@pytest.mark.parametrize("name", ["vit_s14", "vit_s14_reg4"])
@pytest.mark.parametrize("grid", [(3, 5), (7, 7), (5, 3)])
def test_forward_uses_the_hub_interpolation(name: str, grid: tuple[int, int]) -> None:
    torch.manual_seed(0)
    # The preset's interpolation settings on a narrow model with an 8x8 stored grid.
    model = build_backbone(name, embed_dim=16, depth=1, num_heads=2, img_size=8 * 14)
    registers = model.num_register_tokens > 0
    with torch.no_grad():  # zero patch embedding: the tokens are then the position embedding
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
    tokens = model.prepare_tokens(torch.randn(2, 3, grid[0] * 14, grid[1] * 14))
    want = expected_patch_pos(model.pos_embed.detach(), *grid, registers)
    first_patch = 1 + model.num_register_tokens
    torch.testing.assert_close(tokens[0, first_patch:], want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tokens[1, 0], model.pos_embed[0, 0] + model.cls_token[0, 0])
    # The other variant gives measurably different values: the test can tell them apart.
    other = expected_patch_pos(model.pos_embed.detach(), *grid, not registers)
    assert (other - want).abs().max() > 1e-4


def test_stored_embedding_used_as_is_only_for_the_square_stored_grid() -> None:
    model = build_backbone("vit_test")  # 4x4 stored grid
    assert model.interpolate_pos_encoding(4, 4) is model.pos_embed
    non_square = model.interpolate_pos_encoding(2, 8)  # same 16 positions, other shape
    assert non_square.shape == model.pos_embed.shape and not torch.equal(non_square, model.pos_embed)


def test_interpolation_runs_in_float32_and_returns_the_param_dtype() -> None:
    model = build_backbone("vit_test")
    reference = model.interpolate_pos_encoding(3, 6)
    model = model.to(torch.bfloat16)
    resized = model.interpolate_pos_encoding(3, 6)
    assert resized.dtype == torch.bfloat16
    want = expected_patch_pos(model.pos_embed.detach(), 3, 6, registers=False)
    torch.testing.assert_close(resized[0, 1:], want.to(torch.bfloat16))
    torch.testing.assert_close(resized.float(), reference, rtol=0.02, atol=0.002)
