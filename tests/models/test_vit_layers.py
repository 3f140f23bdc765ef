"""The small building blocks: attention, FFNs, LayerScale, patch embedding, token layout."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from lvdtool.errors import InputError
from lvdtool.models import TokenLayout, build_backbone, get_arch_config
from lvdtool.models.layers import Attention, Block, LayerScale, Mlp, PatchEmbed, SwiGLU, attend, xformers_runs_on


def naive_attention(module: Attention, x: torch.Tensor) -> torch.Tensor:
    """Textbook multi-head attention on one (B, N, D) batch."""
    batch, seq_len, dim = x.shape
    heads, head_dim = module.num_heads, dim // module.num_heads
    q, k, v = (module.qkv(x).view(batch, seq_len, 3, heads, head_dim)).unbind(2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, seq_len, dim)
    return module.proj(out)


def test_packed_attention_equals_textbook_attention_per_crop_batch() -> None:
    torch.manual_seed(0)
    attn = Attention(dim=24, num_heads=3)
    batches = [torch.randn(2, 5, 24), torch.randn(3, 5, 24), torch.randn(4, 7, 24)]
    layout = TokenLayout(((2, 5), (3, 5), (4, 7)))
    rows = torch.cat([b.reshape(-1, 24) for b in batches])
    packed = layout.split(attn(rows, layout))
    for got, batch in zip(packed, batches):
        torch.testing.assert_close(got, naive_attention(attn, batch), rtol=1e-5, atol=1e-6)


def test_attention_spans_merge_adjacent_equal_lengths_only() -> None:
    layout = TokenLayout(((2, 5), (3, 5), (4, 7), (1, 5)))
    spans = [(s.start, s.stop, s.batch, s.seq_len) for s in layout.attention_spans()]
    assert spans == [(0, 25, 5, 5), (25, 53, 4, 7), (53, 58, 1, 5)]
    assert layout.total_rows == 58
    assert layout.offsets == [0, 10, 25, 53]


def test_xformers_backend_falls_back_to_sdpa_on_cpu() -> None:
    assert xformers_runs_on("cpu") is False  # xformers kernels are CUDA-only
    q, k, v = torch.randn(3, 2, 4, 6, 8).unbind(0)
    torch.testing.assert_close(attend(q, k, v, "xformers"), attend(q, k, v, "sdpa"))
    torch.testing.assert_close(attend(q, k, v, "sdpa"), F.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v)


def test_mlp_is_gelu_between_fc1_and_fc2() -> None:
    mlp = Mlp(8, 32)
    x = torch.randn(5, 8)
    expected = F.linear(F.gelu(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)
    torch.testing.assert_close(mlp(x), expected)


def test_swiglu_gates_first_half_with_silu() -> None:
    ffn = SwiGLU(8, 16)
    assert ffn.w12.weight.shape == (32, 8) and ffn.w3.weight.shape == (8, 16)
    x = torch.randn(5, 8)
    w1, w2 = ffn.w12.weight[:16], ffn.w12.weight[16:]
    b1, b2 = ffn.w12.bias[:16], ffn.w12.bias[16:]
    hidden = F.silu(x @ w1.T + b1) * (x @ w2.T + b2)
    torch.testing.assert_close(ffn(x), hidden @ ffn.w3.weight.T + ffn.w3.bias)


@pytest.mark.parametrize("dim", [384, 768, 1024, 1536, 200, 36])
def test_swiglu_hidden_is_two_thirds_of_mlp_rounded_up_to_8(dim: int) -> None:
    hidden = get_arch_config("vit_test", embed_dim=dim, num_heads=1, ffn="swiglu").hidden_dim
    two_thirds = int(4 * dim * 2 / 3)
    assert hidden % 8 == 0 and two_thirds <= hidden < two_thirds + 8


def test_giant2_swiglu_width_matches_hub_checkpoint() -> None:
    # The hub ViT-g/14 stores mlp.w12.weight as (8192, 1536): hidden 4096.
    assert get_arch_config("vit_g14").hidden_dim == 4096
    assert get_arch_config("vit_l14").hidden_dim == 4096  # MLP: ratio 4


def test_layerscale_scales_channels_and_starts_at_1e_5() -> None:
    block = Block(get_arch_config("vit_test"))
    assert isinstance(block.ls1, LayerScale) and isinstance(block.ls2, LayerScale)
    assert torch.all(block.ls1.gamma == 1e-5)
    x = torch.randn(3, 32)
    torch.testing.assert_close(block.ls2(x), x * 1e-5)
    assert block.norm1.eps == 1e-6 and block.norm2.eps == 1e-6


def test_block_takes_plain_batches_like_packed_rows() -> None:
    torch.manual_seed(0)
    block = Block(get_arch_config("vit_test", layerscale_init=0.5))
    x = torch.randn(2, 6, 32)
    packed = block(x.reshape(12, 32), TokenLayout.single(2, 6))
    torch.testing.assert_close(block(x), packed.view(2, 6, 32))
    expected = x + block.ls1(naive_attention(block.attn, block.norm1(x)))
    expected = expected + block.ls2(block.mlp(block.norm2(expected)))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)


def test_patch_embed_orders_patches_row_major_and_rejects_ragged_sizes() -> None:
    embed = PatchEmbed(patch_size=4, in_chans=3, embed_dim=5)
    image = torch.randn(1, 3, 8, 12)
    tokens = embed(image)
    assert tokens.shape == (1, 6, 5)
    # Patch (row 1, col 2) is token 1*3 + 2 = 5.
    patch = image[:, :, 4:8, 8:12]
    expected = (embed.proj.weight * patch).sum(dim=(1, 2, 3)) + embed.proj.bias
    torch.testing.assert_close(tokens[0, 5], expected)
    with pytest.raises(InputError, match="patch_size=4"):
        embed(torch.randn(1, 3, 8, 10))


def test_initialisation_follows_official_recipe() -> None:
    torch.manual_seed(0)
    model = build_backbone("vit_tiny", num_register_tokens=4)
    assert torch.all(model.mask_token == 0)
    assert model.cls_token.abs().max() < 1e-4 and model.register_tokens.abs().max() < 1e-4
    assert model.cls_token.abs().max() > 0
    assert abs(model.pos_embed.std().item() - 0.02) < 0.002
    qkv = model.blocks[0].attn.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.002
    assert torch.all(qkv.bias == 0) and torch.all(model.blocks[1].mlp.fc2.bias == 0)
