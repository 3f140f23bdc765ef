"""Multi-crop (packed) forward equals forwarding each crop batch alone; intermediate layers."""

from __future__ import annotations

import pytest
import torch

from lvdtool.errors import ConfigError, InputError


def crops(seed: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Two 4x4-patch globals, three 2x2-patch locals, two non-square 2x3-patch crops."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(2, 3, 56, 56, generator=gen), torch.randn(3, 3, 28, 28, generator=gen),
          torch.randn(2, 3, 28, 42, generator=gen)]
    masks = torch.rand(2, 16, generator=gen) < 0.4
    return xs, [masks, None, None]


def run_loss(outputs: list[dict]) -> torch.Tensor:
    total = torch.zeros(())
    for i, out in enumerate(outputs):
        total = total + (i + 1) * out["x_norm_clstoken"].sin().sum() + out["x_norm_patchtokens"].cos().sum()
        total = total + out["x_prenorm"].square().mean()
    return total


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("train,rate", [(False, 0.0), (True, 0.0), (True, 0.4), (True, 0.05)])
def test_multicrop_equals_per_batch_forward_and_grads(make_test_vit, registers: int, train: bool, rate: float) -> None:
    model = make_test_vit(num_register_tokens=registers, drop_path_rate=rate, depth=3).train(train)
    xs, masks = crops()

    torch.manual_seed(123)
    packed = model.forward_features_list(xs, masks)
    run_loss(packed).backward()
    packed_grads = grads(model)

    # Same seed, crop batches one after another: stochastic depth draws the same choices.
    torch.manual_seed(123)
    alone = [model(x, masks=m) for x, m in zip(xs, masks)]
    run_loss(alone).backward()
    alone_grads = grads(model)

    for got, want in zip(packed, alone):
        assert got["masks"] is want["masks"]
        for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
            assert got[key].shape == want[key].shape
            torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
    for name, grad in alone_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("rate", [0.4, 0.05])
def test_stochastic_depth_changes_training_outputs(make_test_vit, rate: float) -> None:
    # Guards the test above against a drop path that silently does nothing.
    model = make_test_vit(drop_path_rate=rate, depth=3)
    xs, masks = crops()
    eval_out = model.eval().forward_features_list(xs, masks)
    torch.manual_seed(0)
    train_out = model.train().forward_features_list(xs, masks)
    differs = [not torch.allclose(t["x_prenorm"], e["x_prenorm"]) for t, e in zip(train_out, eval_out)]
    assert any(differs)


def test_forward_accepts_a_list_and_validates_masks(make_test_vit) -> None:
    model = make_test_vit().eval()
    xs, masks = crops()
    listed = model(xs, masks)
    assert isinstance(listed, list) and len(listed) == 3
    torch.testing.assert_close(listed[1]["x_prenorm"], model(xs[1])["x_prenorm"], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="masks_list"):
        model.forward_features_list(xs, masks[:2])
    with pytest.raises(InputError, match="masks shape"):
        model(xs[0], masks=torch.zeros(2, 9, dtype=torch.bool))


def test_masked_patches_become_mask_token_plus_position(make_test_vit) -> None:
    model = make_test_vit(num_register_tokens=4)
    x = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, 3] = masks[1, 10] = True
    tokens = model.prepare_tokens(x, masks)
    plain = model.prepare_tokens(x)
    pos = model.pos_embed[0, 1:]
    torch.testing.assert_close(tokens[0, 5 + 3], model.mask_token[0] + pos[3])
    torch.testing.assert_close(tokens[1, 5 + 10], model.mask_token[0] + pos[10])
    keep = torch.ones(2, 21, dtype=torch.bool)
    keep[0, 8] = keep[1, 15] = False
    torch.testing.assert_close(tokens[keep], plain[keep])
    # Token order: CLS (+ its position), then registers without position, then patches.
    torch.testing.assert_close(tokens[0, 0], model.cls_token[0, 0] + model.pos_embed[0, 0])
    torch.testing.assert_close(tokens[1, 1:5], model.register_tokens[0])


def test_get_intermediate_layers_matches_block_outputs(make_test_vit) -> None:
    model = make_test_vit(depth=4, num_register_tokens=4).eval()
    x = torch.randn(2, 3, 42, 56)  # 3 x 4 patches
    # Reference: run the blocks by hand on the plain (B, N, D) tokens.
    hidden, per_block = model.prepare_tokens(x), []
    for block in model.blocks:
        hidden = block(hidden)
        per_block.append(hidden)
    last_two = model.get_intermediate_layers(x, n=2)
    assert isinstance(last_two, tuple) and len(last_two) == 2
    for got, want in zip(last_two, per_block[2:]):
        torch.testing.assert_close(got, model.norm(want)[:, 5:], rtol=1e-5, atol=1e-5)
    picked = model.get_intermediate_layers(x, n=[2, 0], reshape=True, return_class_token=True, norm=False)
    assert [p[0].shape for p in picked] == [(2, 32, 3, 4)] * 2
    for (patches, cls), want in zip(picked, (per_block[0], per_block[2])):  # block order, not list order
        torch.testing.assert_close(cls, want[:, 0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(patches, want[:, 5:].reshape(2, 3, 4, 32).permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    full = model(x)
    torch.testing.assert_close(model.get_intermediate_layers(x, n=1, norm=False)[0], full["x_prenorm"][:, 5:])
    with pytest.raises(ConfigError, match="n="):
        model.get_intermediate_layers(x, n=[4])
    with pytest.raises(ConfigError, match="n="):
        model.get_intermediate_layers(x, n=5)


def test_bf16_autocast_multicrop_with_stochastic_depth(make_test_vit) -> None:
    model = make_test_vit(num_register_tokens=4, drop_path_rate=0.4).train()
    xs, masks = crops()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(5)
        packed = model.forward_features_list(xs, masks)
        torch.manual_seed(5)
        alone = [model(x, masks=m) for x, m in zip(xs, masks)]
    run_loss(packed).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    for got, want in zip(packed, alone):
        torch.testing.assert_close(got["x_prenorm"].float(), want["x_prenorm"].float(), rtol=0.05, atol=0.05)
