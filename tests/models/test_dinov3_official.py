"""Parity with the official DINOv3 ViTs, against outputs recorded from facebookresearch/dinov3.

The official code is not installable here, so `dinov3_official/record.py` ran it once (commit
6876159a) and stored its outputs; the weights are regenerated from key names on both sides
(see `dinov3_official/reference.py`). lvd reads each file's architecture off its keys.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lvdtool.errors import CheckpointError
from lvdtool.models import build_backbone, get_arch_config, infer_backbone_config, load_backbone, match_arch, save_backbone

sys.path.insert(0, str(Path(__file__).parent / "dinov3_official"))
from reference import (  # noqa: E402
    IMAGE_SIZES, LAYOUT_PATH, RELEASED, TRAIN_CROPS, all_buffers, image_batch, keep_patches, record_path, make_images,
    make_weights,
)

TOLERANCE = 1e-4  # relative to the largest magnitude of each output
SPECS = {spec.arch: spec for spec in RELEASED}
LAYOUTS = json.loads(LAYOUT_PATH.read_text())


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def official_weights(arch: str) -> tuple[dict[str, torch.Tensor], dict]:
    spec, record = SPECS[arch], torch.load(record_path(arch), weights_only=True)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_backbone(arch, **spec.lvd_overrides()).state_dict().items()}
    return make_weights(shapes, all_buffers(record["buffers"], shapes)), record


def compare(features: dict[str, torch.Tensor], want: dict[str, torch.Tensor], size: tuple[int, int]) -> float:
    got = {**features, "x_norm_patchtokens": keep_patches(features["x_norm_patchtokens"], size)}
    return max(relative_error(got[k], v) for k, v in want.items())


@pytest.mark.parametrize("arch", list(SPECS))
def test_official_weights_load_and_reproduce_the_official_outputs(arch: str) -> None:
    state, record = official_weights(arch)
    model = load_backbone(state).eval()  # the architecture is read off the keys
    spec = SPECS[arch]
    assert model.config.structure() == get_arch_config(arch, **spec.lvd_overrides()).structure()
    if spec.record_depth == get_arch_config(arch).depth and not spec.record_width:
        assert model.config.arch == arch
    worst = 0.0
    with torch.no_grad():
        for size in IMAGE_SIZES:
            features = model(make_images(size, image_batch(size)))
            assert torch.equal(features["x_storage_tokens"], features["x_norm_regtokens"])
            worst = max(worst, compare(features, record["eval"][f"{size[0]}x{size[1]}"], size))
        if "train" in record:  # the untied local CLS norm, in training mode with rescaling off
            train = load_backbone(state, rope_rescale=None).train()
            crops = [make_images((h, w), b, salt=1) for b, h, w in TRAIN_CROPS]
            outs = train(crops, [None, None])
            for out, want, (_, h, w) in zip(outs, record["train"], TRAIN_CROPS):
                worst = max(worst, compare(out, want, (h, w)))
            eval_local = train.eval()(crops[1])
            assert not torch.allclose(eval_local["x_norm_clstoken"], outs[1]["x_norm_clstoken"])
    assert worst < TOLERANCE, f"{arch}: worst relative error {worst:.2e}"


@pytest.mark.parametrize("arch", list(SPECS))
def test_lvd_buffers_equal_the_official_init(arch: str) -> None:
    _, record = official_weights(arch)
    own = dict(build_backbone(arch, **SPECS[arch].lvd_overrides()).named_buffers())
    assert set(own) == set(all_buffers(record["buffers"], {k: () for k in own}))
    for key, value in record["buffers"].items():
        assert torch.equal(own[key], value), key


@pytest.mark.parametrize("arch", list(SPECS))
def test_full_size_layout_is_the_official_one_and_is_recognised(arch: str) -> None:
    with torch.device("meta"):
        model = build_backbone(arch)
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == list(LAYOUTS[arch].items())  # the same keys, shapes and order
    inferred = infer_backbone_config({k: torch.empty(s, device="meta") for k, s in LAYOUTS[arch].items()}, arch)
    assert match_arch(inferred) == arch


def test_saved_files_have_the_official_layout_and_round_trip(tmp_path: Path) -> None:
    state, record = official_weights("vit_s16_v3")  # the full-size ViT-S/16
    assert record["lvd_save_loads_strictly"]  # checked against the official model when recorded
    model = load_backbone(state).eval()
    path = save_backbone(model, tmp_path / "backbone.pth")
    saved = torch.load(path, weights_only=True)
    assert [(k, list(v.shape)) for k, v in saved.items()] == list(LAYOUTS["vit_s16_v3"].items())
    assert all(v.dtype == torch.float32 for v in saved.values())
    again = load_backbone(path).eval()
    assert again.config.arch == "vit_s16_v3" and again.config.layer_norm_eps == 1e-5
    x = make_images((48, 80))
    with torch.no_grad():
        assert torch.equal(again(x)["x_norm_patchtokens"], model(x)["x_norm_patchtokens"])


def test_periods_stored_in_bf16_still_read_as_base_100(tmp_path: Path) -> None:
    state, _ = official_weights("vit_s16plus_v3")
    rounded = {**state, "rope_embed.periods": state["rope_embed.periods"].to(torch.bfloat16)}
    model = load_backbone(rounded)
    assert model.config.arch == "vit_s16plus_v3" and model.config.rope_base == 100.0
    # the file's own (rounded) periods are used, as the official model would load them
    assert torch.equal(model.rope_embed.periods, rounded["rope_embed.periods"].float())
    geometric = {**state, "rope_embed.periods": torch.linspace(1.0, 50.0, 16)}
    with pytest.raises(CheckpointError, match="rope_embed.periods"):
        load_backbone(geometric)
