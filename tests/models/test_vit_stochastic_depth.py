"""Efficient stochastic depth: dropped images cost no compute; the sum stays unbiased."""

from __future__ import annotations

import pytest
import torch

from lvdtool.models import TokenLayout, build_backbone
from lvdtool.models.layers.stochastic_depth import SampleDrop, SubsetDrop, add_residual, draw_drop_plan


def count_ffn_rows(model: torch.nn.Module, xs: list[torch.Tensor]) -> list[int]:
    """Rows entering each block's FFN and attention during one forward."""
    seen: list[int] = []
    hooks = [b.mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0])) for b in model.blocks]
    hooks += [b.attn.qkv.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0])) for b in model.blocks]
    model.forward_features_list(xs)
    for hook in hooks:
        hook.remove()
    return seen


def test_subset_mode_runs_branches_on_kept_images_only() -> None:
    model = build_backbone("vit_test", depth=3, drop_path_rate=0.4).train()
    xs = [torch.randn(10, 3, 56, 56), torch.randn(5, 3, 28, 28)]  # 17 and 5 tokens per image
    kept_rows = int(10 * 0.6) * 17 + int(5 * 0.6) * 5
    assert count_ffn_rows(model, xs) == [kept_rows] * 6
    assert count_ffn_rows(model.eval(), xs) == [10 * 17 + 5 * 5] * 6


def test_low_rates_use_per_image_drop_path_on_all_rows() -> None:
    model = build_backbone("vit_test", depth=3, drop_path_rate=0.05).train()
    xs = [torch.randn(10, 3, 56, 56)]
    assert count_ffn_rows(model, xs) == [10 * 17] * 6


def test_plan_is_none_when_nothing_drops_and_seeded_otherwise() -> None:
    layout = TokenLayout(((4, 3), (2, 5)))
    assert draw_drop_plan(layout, [0.0, 0.0], torch.device("cpu")) is None
    torch.manual_seed(7)
    first = draw_drop_plan(layout, [0.5, 0.05], torch.device("cpu"))
    torch.manual_seed(7)
    again = draw_drop_plan(layout, [0.5, 0.05], torch.device("cpu"))
    assert isinstance(first[0].attn, SubsetDrop) and isinstance(first[1].ffn, SampleDrop)
    assert torch.equal(first[0].attn.rows, again[0].attn.rows)
    assert torch.equal(first[1].ffn.row_scale, again[1].ffn.row_scale)
    subset = first[0].attn
    # 2 of 4 images (3 rows each) and 1 of 2 images (5 rows each); rows of whole images.
    assert subset.layout.groups == ((2, 3), (1, 5)) and subset.rows.numel() == 11
    first_group = subset.rows[:6].view(2, 3)
    assert torch.all(first_group % 3 == torch.arange(3)) and torch.all(subset.rows[6:] >= 12)


def test_model_outputs_are_deterministic_under_manual_seed() -> None:
    model = build_backbone("vit_test", drop_path_rate=0.4).train()
    with torch.no_grad():
        for block in model.blocks:
            block.ls1.gamma.fill_(1.0)
            block.ls2.gamma.fill_(1.0)
    x = torch.randn(8, 3, 56, 56)
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append(model(x)["x_prenorm"])
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


@pytest.mark.parametrize("rate,batches", [(0.4, (10, 3)), (0.05, (10, 3)), (0.7, (6,))])
def test_residual_is_unbiased_and_per_image_all_or_nothing(rate: float, batches: tuple[int, ...]) -> None:
    seq_len, dim, draws = 3, 4, 1500
    layout = TokenLayout(tuple((b, seq_len) for b in batches))
    x = torch.randn(layout.total_rows, dim)

    def branch(rows: torch.Tensor, sub_layout: TokenLayout) -> torch.Tensor:
        assert rows.shape[0] == sub_layout.total_rows
        return 2.0 * rows + 1.0

    factors = []  # per draw, per image: how much of its branch was added
    torch.manual_seed(0)
    for _ in range(draws):
        plan = draw_drop_plan(layout, [rate], torch.device("cpu"))
        added = (add_residual(x, layout, branch, plan[0].attn) - x) / branch(x, layout)
        per_image = torch.cat([a.reshape(b, -1) for a, b in zip(torch.split(added, layout.group_rows), batches)])
        # All or nothing per image: one factor for all its tokens and channels.
        assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-4)
        factors.append(per_image[:, 0])
    factors_t = torch.stack(factors)
    for image, batch in enumerate(b for b in batches for _ in range(b)):
        # Probability an image is kept: subset size / B (subset mode) or 1 - rate (per image).
        keep = max(int(batch * (1 - rate)), 1) / batch if rate > 0.1 else 1 - rate
        column = factors_t[:, image]
        kept = column != 0
        assert torch.allclose(column[kept], torch.full_like(column[kept], 1 / keep), atol=1e-4)
        std_of_mean = ((1 - keep) / (keep * draws)) ** 0.5
        assert abs(factors_t[:, image].mean().item() - 1.0) < 4 * std_of_mean + 1e-6
