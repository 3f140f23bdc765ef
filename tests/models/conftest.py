"""Shared helpers for the backbone tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from lvdtool.models import VisionTransformer, build_backbone

ShapeTable = dict[str, tuple[int, ...]]


def official_layout(
    dim: int, depth: int, patch: int, grid: int, registers: int, ffn: str, hidden: int
) -> ShapeTable:
    """The hub checkpoint's keys and shapes, written from the fact sheet (not from our model)."""
    table: ShapeTable = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + grid * grid, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, patch, patch),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    if registers:
        table["register_tokens"] = (1, registers, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        table.update({
            b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
            b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
            b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
            b + "ls1.gamma": (dim,),
            b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
            b + "ls2.gamma": (dim,),
        })
        if ffn == "swiglu":
            table.update({
                b + "mlp.w12.weight": (2 * hidden, dim), b + "mlp.w12.bias": (2 * hidden,),
                b + "mlp.w3.weight": (dim, hidden), b + "mlp.w3.bias": (dim,),
            })
        else:
            table.update({
                b + "mlp.fc1.weight": (hidden, dim), b + "mlp.fc1.bias": (hidden,),
                b + "mlp.fc2.weight": (dim, hidden), b + "mlp.fc2.bias": (dim,),
            })
    return table


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """These models are tiny: intra-op threads only add synchronisation (the folder ran 2x
    faster on one thread of the shared 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def layout_table() -> Callable[..., ShapeTable]:
    return official_layout


@pytest.fixture
def make_test_vit() -> Callable[..., VisionTransformer]:
    """vit_test with its parameters perturbed so every weight (gamma, cls, mask) matters."""

    def make(seed: int = 0, **overrides: object) -> VisionTransformer:
        torch.manual_seed(seed)
        model = build_backbone("vit_test", **overrides)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.1 * torch.randn_like(param))
        return model

    return make
