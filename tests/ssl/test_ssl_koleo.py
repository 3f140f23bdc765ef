import math

import pytest
import torch

from lvdtool.ssl.koleo import koleo_loss, koleo_loss_per_view


def _circle(degrees, radius=1.0):
    rad = [math.radians(d) for d in degrees]
    return torch.tensor([[radius * math.cos(a), radius * math.sin(a)] for a in rad])


def test_three_points_on_a_circle():
    # 0, 60 and 180 degrees: nearest neighbours 0<->60 (chord 1) and 180->60 (chord sqrt 3)
    x = _circle([0, 60, 180])
    expected = -(math.log(1.0) + math.log(1.0) + math.log(math.sqrt(3.0))) / 3
    assert koleo_loss(x).item() == pytest.approx(expected, abs=1e-5)


def test_scale_invariant_and_float32():
    x = _circle([0, 60, 180])
    a = koleo_loss(x)
    b = koleo_loss((x * 7.0).to(torch.bfloat16))
    assert b.dtype == torch.float32
    assert b.item() == pytest.approx(a.item(), abs=2e-2)


def test_batch_of_one_is_zero_not_nan():
    x = torch.randn(1, 8, requires_grad=True)
    loss = koleo_loss(x)
    assert loss.item() == 0.0 and torch.isfinite(loss)


def test_duplicates_give_finite_loss_and_gradient():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss = koleo_loss(x)
    assert torch.isfinite(loss)
    # duplicated rows are each other's neighbours at distance ~0: -log is large but finite
    assert loss.item() > 5.0
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_per_view_sums_views_separately():
    a, b = _circle([0, 60, 180]), _circle([0, 90, 180, 270])[:3]
    both = koleo_loss_per_view(torch.cat([a, b]), n_views=2)
    torch.testing.assert_close(both, koleo_loss(a) + koleo_loss(b))
