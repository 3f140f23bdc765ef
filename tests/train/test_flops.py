"""Analytic FLOPs against torch's own FLOP counter, and against the recipe's ViT-L/14 figure."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lvdtool.models import build_backbone, get_arch_config
from lvdtool.ssl import HeadConfig
from lvdtool.ssl.heads import DinoHead
from lvdtool.train.flops import StepShape, device_peak_flops, head_forward_flops, pretrain_flops_per_image, vit_forward_flops


def counted(fn) -> int:
    # The math SDPA backend runs attention as matmuls the counter sees (the fused CPU kernel has
    # no FLOP formula registered).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("overrides", [
    {"patch_size": 8, "img_size": 32},
    {"patch_size": 8, "img_size": 32, "ffn": "swiglu", "num_register_tokens": 4},
], ids=["mlp", "swiglu-registers"])
def test_backbone_forward_flops_match_torch_counter(overrides):
    model = build_backbone("vit_test", **overrides).eval()
    for size in (32, 16):
        x = torch.randn(1, 3, size, size)
        with torch.no_grad():
            measured = counted(lambda: model(x))
        assert vit_forward_flops(model.config, size) == pytest.approx(measured, rel=1e-9)


def test_head_flops_match_torch_counter():
    head = DinoHead(32, out_dim=96, hidden_dim=40, bottleneck_dim=24, nlayers=3)
    with torch.no_grad():
        measured = counted(lambda: head(torch.randn(1, 32)))
    assert head_forward_flops(32, HeadConfig(96, 40, 24, 3)) == pytest.approx(measured, rel=1e-9)


def test_vit_l14_recipe_is_about_2_06_tflop_per_image():
    # RECIPE.md: student fwd+bwd on 2x224 + 8x98, teacher fwd on 2x224, heads: about 2.06 TFLOP
    flops = pretrain_flops_per_image(
        get_arch_config("vit_l14"), StepShape(224, 98, 8),
        dino_head=HeadConfig(131072, 2048, 384), ibot_head=HeadConfig(131072, 2048, 256),
    )
    assert flops == pytest.approx(2.06e12, rel=0.02)


def test_peak_lookup():
    assert device_peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(799e12)
    assert device_peak_flops("some cpu") is None
    assert device_peak_flops("some cpu", override_tflops=10) == pytest.approx(10e12)
