"""The DINO head and the optimizer's parameter groups against the official DINOv2 code
(PyPI `dinov2==0.0.1.dev2`; a missing package fails with the install hint, never skips).

Official facts checked on named parameters: the prototype layer is weight-normalised with a
trainable gain `weight_g` (started at 1, weight-decayed, in the last-layer group), its weights
keep nn.Linear's default init (the MLP's trunc-normal init runs before the layer exists), and
the weight-decay rule is by name (`.bias`, `norm`, `gamma` exempt), so the CLS and mask tokens
and the position embedding are decayed. lvd's paper presets follow all of it.
"""
from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch

from lvdtool.config import compose_config
from lvdtool.models import build_backbone
from lvdtool.ssl import SSLNetwork, build_param_groups
from lvdtool.ssl.heads import DinoHead
from lvdtool.train.config import PretrainConfig

INSTALL_HINT = "official DINOv2 code missing: pip install --no-deps dinov2==0.0.1.dev2"
DEPTH = 3


@pytest.fixture(scope="module")
def official():
    try:
        logging.getLogger("dinov2").setLevel(logging.ERROR)
        from dinov2.layers.dino_head import DINOHead
        from dinov2.models import vision_transformer
        from dinov2.utils.param_groups import get_params_groups_with_decay
    except ImportError as error:
        pytest.fail(f"{INSTALL_HINT} ({error})")
    return DINOHead, vision_transformer, get_params_groups_with_decay


def official_head(DINOHead, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated
        return DINOHead(*args, **kwargs)


def test_head_init_and_outputs_equal_the_official_head_from_the_same_seed(official):
    DINOHead = official[0]
    torch.manual_seed(3)
    ref = official_head(DINOHead, 48, 300, hidden_dim=96, bottleneck_dim=40)
    torch.manual_seed(3)
    ours = DinoHead(48, 300, hidden_dim=96, bottleneck_dim=40)
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert sorted(ref_state) == sorted(our_state)
    for key, value in ref_state.items():
        assert torch.equal(value, our_state[key]), key  # bitwise: same init, same RNG order
    # prototypes keep nn.Linear's default init, not the MLP's trunc-normal 0.02
    assert our_state["last_layer.weight_v"].abs().max() <= 1 / math.sqrt(40)
    assert our_state["last_layer.weight_v"].std() > 2 * 0.02

    # trainable gain: after moving the gain and the prototypes, outputs and gradients still match
    with torch.no_grad():
        for head in (ref, ours):
            head.last_layer.weight_g.mul_(torch.linspace(0.5, 2.0, 300).unsqueeze(1))
    x = torch.randn(7, 48)
    ref_out, our_out = ref(x), ours(x)
    torch.testing.assert_close(our_out, ref_out, rtol=1e-5, atol=1e-6)
    ref_out.logsumexp(-1).sum().backward()
    our_out.logsumexp(-1).sum().backward()
    for name, p in ref.named_parameters():
        mine = dict(ours.named_parameters())[name]
        assert mine.requires_grad == p.requires_grad, name
        torch.testing.assert_close(mine.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def official_rules(official, backbone, head) -> dict[str, tuple[float, float, bool]]:
    """name -> (lr multiplier, wd multiplier, is last layer) as the official SSLMetaArch builds its
    groups: one call per submodule (backbone, dino_head), names prefixed by the submodule."""
    get_groups = official[2]
    rules = {}
    for prefix, module in (("backbone", backbone), ("dino_head", head)):
        for group in get_groups(module, lr_decay_rate=0.9, patch_embed_lr_mult=0.2):
            rules[f"{prefix}.{group['name']}"] = (group["lr_multiplier"], group["wd_multiplier"], group["is_last_layer"])
    return rules


def test_param_groups_follow_the_official_rules_by_name(official):
    DINOHead, vision_transformer, _ = official
    torch.manual_seed(0)
    ref_backbone = vision_transformer.DinoVisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=DEPTH, num_heads=2, init_values=1e-5, block_chunks=0)
    ref_head = official_head(DINOHead, 32, 64, hidden_dim=32, bottleneck_dim=16)
    expected = official_rules(official, ref_backbone, ref_head)

    ours = SSLNetwork(build_backbone("vit_test", depth=DEPTH, patch_size=8, img_size=32), DinoHead(32, 64, 32, 16))
    groups = build_param_groups(ours.named_parameters(), DEPTH, 0.9, 0.2)  # defaults: the official rule
    actual = {name: (g.rule.lr_multiplier, g.rule.wd_multiplier, g.rule.is_last_layer)
              for g in groups for name in g.names}
    assert sorted(actual) == sorted(expected)
    for name, (lr, wd, last) in expected.items():
        assert actual[name][0] == pytest.approx(lr), name
        assert actual[name][1:] == (wd, last), name
    # the points where lvd used to differ, spelled out
    for name in ("backbone.cls_token", "backbone.pos_embed", "backbone.mask_token", "dino_head.last_layer.weight_g"):
        assert actual[name][1] == 1.0, name
    assert actual["dino_head.last_layer.weight_g"][2] is True


@pytest.mark.parametrize("recipe", ["vit_s14", "vit_b14", "vit_l14", "vit_g14", "vit_s14_reg4"])
def test_paper_presets_use_the_official_head_and_decay_rules(recipe):
    cfg, _ = compose_config("pretrain", [f"recipe={recipe}", "data.images=-", "out=-"], PretrainConfig)
    for section in (cfg.dino, cfg.ibot):
        assert (section.prototype_gain, section.prototype_init) == ("trainable", "default")
    assert cfg.optim.token_weight_decay is True
    assert cfg.dino.center_init == "zeros"
