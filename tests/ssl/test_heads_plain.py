"""DINOv3 heads: the plain prototype layer (nn.Linear, no bias, no weight norm; key last_layer.weight)
selected by `prototype_layer`, separate DINO and iBOT heads with Sinkhorn-Knopp."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lvdtool.config import compose_config
from lvdtool.errors import ConfigError
from lvdtool.models import build_backbone
from lvdtool.ssl.heads import DinoHead
from lvdtool.ssl.meta_arch import SSLMetaArch
from lvdtool.ssl.param_groups import build_param_groups
from lvdtool.ssl.schedules import is_last_layer_param
from lvdtool.train.config import PretrainConfig


def test_plain_prototypes_are_an_unnormalised_linear_map_with_the_official_key():
    torch.manual_seed(0)
    head = DinoHead(16, out_dim=40, hidden_dim=24, bottleneck_dim=8, prototype_layer="plain", prototype_init="trunc_normal")
    names = set(dict(head.named_parameters()))
    assert "last_layer.weight" in names and not {"last_layer.weight_v", "last_layer.weight_g", "last_layer.bias"} & names
    weight = head.last_layer.weight
    assert weight.shape == (40, 8)
    assert 0.016 < weight.std() < 0.024  # trunc-normal std 0.02 (320 values: the estimate's sd is ~0.0008)
    with torch.no_grad():
        weight.mul_(3.0)  # no normalisation: scaling the prototypes scales the logits
    x = torch.randn(5, 16)
    expected = F.normalize(head.mlp(x), dim=-1) @ weight.t()
    assert torch.allclose(head(x), expected, atol=1e-6)
    # a DINOv3-layout state dict loads strictly
    official = {k: v.clone() for k, v in head.state_dict().items()}
    DinoHead(16, out_dim=40, hidden_dim=24, bottleneck_dim=8, prototype_layer="plain").load_state_dict(official, strict=True)
    # the default stays DINOv2's weight-normalised layer
    assert "last_layer.weight_v" in dict(DinoHead(16, 40, 24, 8).named_parameters())


def test_plain_prototypes_are_frozen_and_decayed_like_the_normalised_ones():
    head = DinoHead(16, out_dim=40, hidden_dim=24, bottleneck_dim=8, prototype_layer="plain")
    assert is_last_layer_param("dino_head.last_layer.weight")
    groups = build_param_groups([(f"dino_head.{n}", p) for n, p in head.named_parameters()], depth=2,
                                layerwise_decay=1.0, patch_embed_lr_mult=0.2)
    (last,) = [g for g in groups if g.rule.is_last_layer]
    assert last.names == ["dino_head.last_layer.weight"] and last.rule.wd_multiplier == 1.0  # a matrix: weight-decayed (the official rule)


def test_dinov3_heads_from_config_separate_sinkhorn_knopp():
    cfg, _ = compose_config("pretrain", ["data.images=/x", "out=/y", "recipe=vit_test", "dino.prototype_layer=plain",
                                         "ibot.prototype_layer=plain", "ibot.separate_head=true", "ibot.prototypes=64",
                                         "dino.centering=sinkhorn_knopp"], PretrainConfig)
    cfg.validate()
    torch.manual_seed(0)
    meta = SSLMetaArch(build_backbone("vit_test"), cfg.meta_arch_config())
    keys = set(meta.student.state_dict())
    assert {"dino_head.last_layer.weight", "ibot_head.last_layer.weight"} <= keys
    assert meta.student.ibot_head.last_layer.weight.shape[0] == 64 and meta.dino_center is None


def test_a_bad_prototype_layer_is_a_one_line_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"ibot\.prototype_layer='linear'") as info:  # refused when composing
        compose_config("pretrain", ["data.images=/x", "out=/y", "ibot.prototype_layer=linear"], PretrainConfig)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="prototype layer"):
        DinoHead(8, 4, 8, 4, prototype_layer="linear")
