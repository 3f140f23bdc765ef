"""Axial RoPE of the DINOv3 backbones against its formula, on small and non-square grids."""

from __future__ import annotations

import math

import pytest
import torch

from lvdtool.errors import ConfigError
from lvdtool.models import build_backbone, get_arch_config
from lvdtool.models.layers.attention import KeyMaskedBiasLinear
from lvdtool.models.layers.rope import RopeEmbedding, apply_rope


def formula_angles(grid: tuple[int, int], head_dim: int, base: float = 100.0) -> torch.Tensor:
    """(H*W, head_dim) angles written out one patch and one frequency at a time."""
    height, width = grid
    quarter = head_dim // 4
    periods = [base ** (k / quarter) for k in range(quarter)]
    rows = []
    for i in range(height):
        for j in range(width):
            y, x = 2 * (i + 0.5) / height - 1, 2 * (j + 0.5) / width - 1
            half = [2 * math.pi * y / p for p in periods] + [2 * math.pi * x / p for p in periods]
            rows.append(half + half)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("grid", [(2, 3), (3, 2), (4, 4), (1, 5)])
def test_tables_follow_the_formula_on_small_grids(grid: tuple[int, int]) -> None:
    rope = RopeEmbedding(head_dim=16).eval()
    assert torch.allclose(rope.periods.double(), torch.tensor([100 ** (k / 4) for k in range(4)], dtype=torch.float64))
    sin, cos = rope.table(rope.coords(grid))
    angles = formula_angles(grid, 16)
    assert torch.allclose(sin.double(), angles.sin(), atol=1e-6)
    assert torch.allclose(cos.double(), angles.cos(), atol=1e-6)


def test_min_and_max_normalisation_divide_both_axes_by_one_side() -> None:
    coords = {n: RopeEmbedding(16, normalize=n).coords((2, 4)) for n in ("separate", "max", "min")}
    assert torch.allclose(coords["separate"][:, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]).repeat(2))
    assert torch.allclose(coords["max"][:4, 0], torch.full((4,), 2 * 0.5 / 4 - 1))  # row 0 over the longer side
    assert torch.allclose(coords["min"][:4, 1], torch.tensor([2 * (j + 0.5) / 2 - 1 for j in range(4)]))


def test_rotation_pairs_dimension_d_with_d_plus_half_and_leaves_the_prefix() -> None:
    torch.manual_seed(0)
    grid, head_dim, prefix = (2, 3), 8, 5  # CLS + 4 storage tokens in front
    rope = RopeEmbedding(head_dim).eval()
    table = rope.table(rope.coords(grid))
    q, k = torch.randn(2, 3, prefix + 6, head_dim), torch.randn(2, 3, prefix + 6, head_dim)
    q2, k2 = apply_rope(q, k, table)
    assert torch.equal(q2[:, :, :prefix], q[:, :, :prefix]) and torch.equal(k2[:, :, :prefix], k[:, :, :prefix])
    angles = formula_angles(grid, head_dim).float()
    half = head_dim // 2
    for d in range(half):
        a, b = q[:, :, prefix:, d], q[:, :, prefix:, d + half]
        c, s = angles[:, d].cos(), angles[:, d].sin()
        assert torch.allclose(q2[:, :, prefix:, d], a * c - b * s, atol=1e-6)
        assert torch.allclose(q2[:, :, prefix:, d + half], b * c + a * s, atol=1e-6)
    # Rotations preserve norms and make q.k depend on relative position only (per axis).
    assert torch.allclose(q2.norm(dim=-1), q.norm(dim=-1), atol=1e-5)


def test_coordinate_augmentations_only_in_training() -> None:
    rope = RopeEmbedding(16, shift=0.1, jitter=1.5, rescale=2.0)
    plain = RopeEmbedding(16).table(RopeEmbedding(16).coords((3, 5)))
    rope.eval()
    for table in rope.tables([(3, 5)], n_blocks=3)[0] + rope.tables([(3, 5)], n_blocks=3)[2]:
        assert torch.equal(table[0], plain[0]) and torch.equal(table[1], plain[1])
    rope.train()
    torch.manual_seed(0)
    tables = rope.tables([(3, 5), (3, 5)], n_blocks=2)
    sins = [t[0] for row in tables for t in row]
    assert all(not torch.equal(a, b) for i, a in enumerate(sins) for b in sins[i + 1:])  # per block, per crop batch


def test_rescale_multiplies_both_axes_by_one_factor_in_its_range() -> None:
    rope = RopeEmbedding(16, rescale=2.0).train()
    torch.manual_seed(1)
    factors = rope.draw_factors(n_blocks=50, n_groups=2)["rescale"]
    assert factors.shape == (50, 2, 1)
    assert factors.min() >= 0.5 and factors.max() <= 2.0 and factors.min() < 0.7 and factors.max() > 1.4


def test_backbone_is_deterministic_in_eval_and_augmented_in_training() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_test_v3", layerscale_init=1.0)  # rope_rescale 2, as the released models
    x = torch.randn(2, 3, 24, 40)
    model.eval()
    with torch.no_grad():
        a, b = model(x)["x_norm_patchtokens"], model(x)["x_norm_patchtokens"]
        assert torch.equal(a, b)
        model.train()
        c = model(x)["x_norm_patchtokens"]
    assert not torch.allclose(a, c)


def test_packed_multicrop_equals_separate_forwards_also_for_equal_lengths_of_different_grids() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_test_v3", layerscale_init=1.0).eval()  # blocks that matter (not 1e-5)
    # 4x6 and 6x4 grids have the same token count: one attention call, two RoPE tables.
    crops = [torch.randn(2, 3, 32, 48), torch.randn(3, 3, 48, 32), torch.randn(2, 3, 16, 16)]
    with torch.no_grad():
        packed = model(crops)
        for crop, out in zip(crops, packed):
            alone = model(crop)
            assert torch.allclose(out["x_norm_patchtokens"], alone["x_norm_patchtokens"], atol=1e-5)
            assert torch.allclose(out["x_norm_clstoken"], alone["x_norm_clstoken"], atol=1e-5)


def test_stochastic_depth_subsets_keep_their_crop_batch_tables() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_test_v3", drop_path_rate=0.5, layerscale_init=1.0).train()
    outs = model([torch.randn(4, 3, 32, 48), torch.randn(4, 3, 48, 32)])
    loss = sum(o["x_norm_patchtokens"].square().mean() for o in outs)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n != "mask_token")


def test_the_key_bias_is_masked_and_the_query_bias_is_not() -> None:
    layer = KeyMaskedBiasLinear(4, 12)
    assert layer.bias_mask.tolist() == [1.0] * 4 + [0.0] * 4 + [1.0] * 4
    x = torch.randn(3, 4)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(12))
        out = layer(x)
        assert torch.allclose(out[:, 4:8], x @ layer.weight[4:8].T)  # the key third has no bias
        assert torch.allclose(out[:, :4], x @ layer.weight[:4].T + layer.bias[:4])


def test_swiglu_widths_of_the_released_models() -> None:
    widths = {a: get_arch_config(a).hidden_dim for a in ("vit_s16plus_v3", "vit_l16plus_v3", "vit_h16plus_v3", "vit_7b16_v3")}
    assert widths == {"vit_s16plus_v3": 1536, "vit_l16plus_v3": 4096, "vit_h16plus_v3": 5120, "vit_7b16_v3": 8192}
    assert get_arch_config("vit_7b16_v3", embed_dim=4000, num_heads=25).hidden_dim % 64 == 0


def test_rope_config_errors_name_the_field() -> None:
    get_arch_config("vit_test_v3", num_heads=4)  # head_dim 8: fine
    with pytest.raises(ConfigError, match="num_heads"):
        get_arch_config("vit_test_v3", embed_dim=36, num_heads=6)  # head_dim 6: no axial split in quarters
    with pytest.raises(ConfigError, match="rope_rescale"):
        get_arch_config("vit_test_v3", rope_rescale=0.5)
    with pytest.raises(ConfigError, match="family"):
        get_arch_config("vit_test", mask_k_bias=True)
