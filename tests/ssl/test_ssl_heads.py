import math

import pytest
import torch
import torch.nn.functional as F

from lvdtool.errors import ConfigError
from lvdtool.ssl.heads import DinoHead
from lvdtool.ssl.schedules import is_last_layer_param


def test_head_shapes_and_layer_structure():
    head = DinoHead(in_dim=16, out_dim=10, hidden_dim=32, bottleneck_dim=8, nlayers=3)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 32), (32, 8)]
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    assert not any(isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm1d)) for m in head.modules())
    assert head(torch.randn(5, 16)).shape == (5, 10)
    assert head(torch.randn(2, 3, 16)).shape == (2, 3, 10)


def test_single_layer_head_maps_directly_to_bottleneck():
    head = DinoHead(in_dim=6, out_dim=4, hidden_dim=32, bottleneck_dim=3, nlayers=1)
    assert len(head.mlp) == 1 and head.mlp[0].out_features == 3


def test_logits_are_cosines_with_unit_prototypes():
    torch.manual_seed(0)
    head = DinoHead(in_dim=8, out_dim=7, hidden_dim=16, bottleneck_dim=5)
    x = torch.randn(4, 8)
    z = F.normalize(head.mlp(x), dim=-1)
    w = head.last_layer.weight_v
    expected = z @ (w / w.norm(dim=1, keepdim=True)).t()
    torch.testing.assert_close(head(x), expected)
    assert head(x).abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("gain", ["trainable", "fixed"])
def test_prototype_direction_not_scale_of_weight_v_matters(gain):
    torch.manual_seed(0)
    head = DinoHead(in_dim=8, out_dim=7, hidden_dim=16, bottleneck_dim=5, prototype_gain=gain)
    x = torch.randn(3, 8)
    before = head(x)
    with torch.no_grad():
        head.last_layer.weight_v.mul_(torch.linspace(0.5, 4.0, 7).unsqueeze(1))
    torch.testing.assert_close(head(x), before)


def test_trainable_gain_scales_each_prototype_logit():
    torch.manual_seed(0)
    head = DinoHead(in_dim=8, out_dim=7, hidden_dim=16, bottleneck_dim=5)
    x = torch.randn(3, 8)
    before = head(x)
    gains = torch.linspace(0.5, 4.0, 7).unsqueeze(1)
    with torch.no_grad():
        head.last_layer.weight_g.copy_(gains)
    torch.testing.assert_close(head(x), before * gains.t())


def test_init_and_parameter_names():
    torch.manual_seed(0)
    head = DinoHead(in_dim=64, out_dim=512, hidden_dim=256, bottleneck_dim=128)
    for m in head.mlp:
        if isinstance(m, torch.nn.Linear):
            assert torch.all(m.bias == 0)
            assert abs(m.weight.std().item() - 0.02) < 0.002
            assert abs(m.weight.mean().item()) < 0.002
    names = [n for n, _ in head.named_parameters()]
    frozen = [n for n in names if is_last_layer_param(n)]
    assert frozen == ["last_layer.weight_v", "last_layer.weight_g"]
    assert not any(p.ndim == 1 for n, p in head.named_parameters() if n.startswith("last_layer"))  # no bias
    # prototypes keep nn.Linear's init, uniform(+-1/sqrt(in)), not the MLP's trunc-normal 0.02
    v, bound = head.last_layer.weight_v, 1 / math.sqrt(128)
    assert v.abs().max() <= bound and abs(v.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert torch.equal(head.last_layer.weight_g, torch.ones(512, 1)) and head.last_layer.weight_g.requires_grad
    fixed = DinoHead(in_dim=64, out_dim=512, hidden_dim=256, bottleneck_dim=128, prototype_gain="fixed",
                     prototype_init="trunc_normal")
    assert fixed.last_layer.weight_g is None and abs(fixed.last_layer.weight_v.std().item() - 0.02) < 0.002


def test_gradients_reach_all_parameters():
    head = DinoHead(in_dim=8, out_dim=7, hidden_dim=16, bottleneck_dim=5)
    head(torch.randn(3, 8)).logsumexp(-1).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the gradient of a normalised weight is orthogonal to each prototype row
    w, g = head.last_layer.weight_v, head.last_layer.weight_v.grad
    assert (w * g).sum(dim=1).abs().max() < 1e-6 * max(1.0, g.abs().max().item()) + 1e-7
    assert math.isfinite(g.norm().item())


@pytest.mark.parametrize("kwargs", [{"nlayers": 0}, {"bottleneck_dim": 0}, {"out_dim": 0}])
def test_bad_config_raises(kwargs):
    with pytest.raises(ConfigError):
        DinoHead(in_dim=8, **kwargs)
