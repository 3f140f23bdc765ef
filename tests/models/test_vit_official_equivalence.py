"""Numerical equivalence with the official DINOv2 code (PyPI `dinov2==0.0.1.dev2`, April 2023).

The package must be installed (`pip install --no-deps dinov2==0.0.1.dev2`): a missing package
fails these tests with that instruction rather than skipping them. Its layers fall back to plain
PyTorch without xformers. That snapshot has no register tokens; the register models'
interpolation is checked in test_vit_pos_embed.py.
"""

from __future__ import annotations

import logging
from types import ModuleType

import pytest
import torch

from lvdtool.models import load_backbone

INSTALL_HINT = "official DINOv2 code missing: pip install --no-deps dinov2==0.0.1.dev2"


@pytest.fixture(scope="module")
def official() -> ModuleType:
    try:
        logging.getLogger("dinov2").setLevel(logging.ERROR)  # "xFormers not available" warnings
        from dinov2.models import vision_transformer
    except ImportError as error:
        pytest.fail(f"{INSTALL_HINT} ({error})")
    return vision_transformer


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random non-trivial values everywhere (cls, mask token, LayerScale), so every weight counts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return model


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def assert_same_features(ours: dict, theirs: dict) -> None:
    for key in ("x_norm_clstoken", "x_norm_patchtokens", "x_prenorm"):
        assert ours[key].shape == theirs[key].shape, key
        assert rel_err(ours[key], theirs[key]) < 1e-5, key


@pytest.fixture(scope="module")
def vit_s14_pair(official: ModuleType) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ref = perturbed(official.vit_small(patch_size=14, img_size=518, init_values=1.0, block_chunks=0), 1)
    ours = load_backbone(ref.state_dict())  # architecture inferred from the hub-shaped weights
    assert ours.config.arch == "vit_s14"
    return ref.eval(), ours.eval()


def test_vit_s14_features_match_official(vit_s14_pair) -> None:
    ref, ours = vit_s14_pair
    square = torch.randn(1, 3, 224, 224)
    non_square = torch.randn(2, 3, 112, 168)  # 8 x 12 patches
    masks = torch.rand(2, 8 * 12) < 0.3
    with torch.no_grad():
        assert_same_features(ours(square), ref.forward_features(square))
        assert_same_features(ours(non_square, masks=masks), ref.forward_features(non_square, masks=masks))


def test_vit_s14_intermediate_layers_match_official(vit_s14_pair) -> None:
    ref, ours = vit_s14_pair
    x = torch.randn(1, 3, 98, 126)
    with torch.no_grad():
        for kwargs in ({"n": 4}, {"n": [0, 5, 11], "reshape": True, "return_class_token": True},
                       {"n": 2, "norm": False, "return_class_token": True}):
            got, want = ours.get_intermediate_layers(x, **kwargs), ref.get_intermediate_layers(x, **kwargs)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                for g_part, w_part in zip(g if isinstance(g, tuple) else (g,), w if isinstance(w, tuple) else (w,)):
                    assert g_part.shape == w_part.shape and rel_err(g_part, w_part) < 1e-5


def test_swiglu_chunked_training_layout_matches_official(official: ModuleType) -> None:
    # Giant2's FFN rule (SwiGLU, 2/3 width rounded to 8) on a narrow model, saved with FSDP
    # block chunks (keys blocks.{chunk}.{i}.*) as official training checkpoints are.
    torch.manual_seed(0)
    ref = official.DinoVisionTransformer(
        img_size=224, patch_size=14, embed_dim=128, depth=4, num_heads=2, init_values=1.0,
        ffn_layer="swiglufused", block_chunks=2,
    )
    ref = perturbed(ref, 2).eval()
    assert any(k.startswith("blocks.1.3.") for k in ref.state_dict())
    ours = load_backbone({"teacher": {f"backbone.{k}": v for k, v in ref.state_dict().items()}}).eval()
    assert ours.config.ffn == "swiglu" and ours.config.num_heads == 2 and ours.config.hidden_dim == 344
    with torch.no_grad():
        for size in ((224, 224), (98, 126)):
            x = torch.randn(2, 3, *size)
            assert_same_features(ours(x), ref.forward_features(x))
