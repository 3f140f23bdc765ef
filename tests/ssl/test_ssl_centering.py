import pytest
import torch

from lvdtool.errors import InputError
from lvdtool.ssl.centering import SoftmaxCenter, sinkhorn_knopp


def reference_sinkhorn(logits, temp, n_iterations):
    """The textbook algorithm in float64, no stabilisation: Q is K x B."""
    q = torch.exp(logits.double() / temp).t()
    k, b = q.shape
    q /= q.sum()
    for _ in range(n_iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


# ---- softmax centering -------------------------------------------------------------------

def test_center_ema_by_hand():
    c = SoftmaxCenter(2, momentum=0.9)
    c.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # batch mean (2, 3)
    torch.testing.assert_close(c.center, torch.tensor([[0.2, 0.3]]))
    c.update(torch.tensor([[0.0, 0.0]]))
    torch.testing.assert_close(c.center, torch.tensor([[0.18, 0.27]]))


def test_softmax_uses_current_center_and_temp():
    c = SoftmaxCenter(3, momentum=0.5)
    c.center.copy_(torch.tensor([[0.1, -0.2, 0.3]]))
    t = torch.tensor([[1.0, 0.0, -1.0]])
    expected = torch.softmax((t - c.center) / 0.04, dim=-1)
    torch.testing.assert_close(c.softmax(t, 0.04), expected)
    assert c.softmax(t, 0.04).sum().item() == pytest.approx(1.0)


def test_forward_uses_old_center_then_updates():
    c = SoftmaxCenter(2, momentum=0.9)
    t = torch.tensor([[2.0, 0.0]])
    probs = c(t, 1.0)
    torch.testing.assert_close(probs, torch.softmax(t, dim=-1))  # center was still 0
    torch.testing.assert_close(c.center, torch.tensor([[0.2, 0.0]]))


def test_masked_variant_uses_valid_rows_only():
    c = SoftmaxCenter(2, momentum=0.0)
    t = torch.tensor([[1.0, 3.0], [3.0, 1.0], [100.0, 100.0]])
    probs = c(t, 1.0, n_valid_rows=2)
    assert torch.all(probs[2] == 0)
    torch.testing.assert_close(c.center, torch.tensor([[2.0, 2.0]]))
    c.update(t, n_valid_rows=0)  # nothing to average: centre unchanged
    torch.testing.assert_close(c.center, torch.tensor([[2.0, 2.0]]))


def test_center_is_a_buffer_in_state_dict():
    assert "center" in SoftmaxCenter(4).state_dict()


# ---- Sinkhorn-Knopp ------------------------------------------------------------------------

def test_sinkhorn_matches_reference_and_rows_sum_to_one():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    q = sinkhorn_knopp(logits, temp=0.5, n_iterations=3)
    assert q.dtype == torch.float32 and q.shape == (6, 4)
    torch.testing.assert_close(q.double(), reference_sinkhorn(logits, 0.5, 3), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(6))


def test_sinkhorn_converges_to_doubly_stochastic():
    g = torch.Generator().manual_seed(1)
    b, k = 12, 4
    q = sinkhorn_knopp(torch.randn(b, k, generator=g), temp=0.3, n_iterations=200)
    # every sample is a distribution; every prototype receives an equal share B / K
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b))
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), b / k), rtol=1e-4, atol=1e-4)
    assert torch.all(q > 0)


def test_sinkhorn_balances_a_collapsed_teacher():
    # every sample prefers prototype 0; softmax would give all the mass to it, SK spreads it
    logits = torch.tensor([[1.0, 0.0], [0.9, 0.0], [0.8, 0.0], [0.7, 0.0]])
    q = sinkhorn_knopp(logits, temp=0.1, n_iterations=50)
    assert q[:, 0].sum().item() == pytest.approx(2.0, abs=1e-2)
    assert q[0, 0] > q[3, 0]  # the order of preference is kept


def test_sinkhorn_is_stable_for_large_logits():
    g = torch.Generator().manual_seed(2)
    logits = 10.0 + 3.0 * torch.randn(5, 3, generator=g)
    assert torch.isinf(torch.exp(logits / 0.04)).any()  # the plain formula overflows in float32
    q = sinkhorn_knopp(logits, temp=0.04)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(5))
    ref = reference_sinkhorn(logits, 0.04, 3)  # float64 does not overflow here
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(q.double(), ref, rtol=1e-4, atol=1e-6)


def test_sinkhorn_masked_variant_ignores_padding():
    g = torch.Generator().manual_seed(3)
    valid = torch.randn(5, 4, generator=g)
    padded = torch.cat([valid, torch.full((3, 4), 1e4)])
    q = sinkhorn_knopp(padded, temp=0.2, n_valid_rows=5)
    torch.testing.assert_close(q[:5], sinkhorn_knopp(valid, temp=0.2))
    assert torch.all(q[5:] == 0)
    assert torch.all(sinkhorn_knopp(padded, temp=0.2, n_valid_rows=0) == 0)


def test_sinkhorn_bad_arguments():
    with pytest.raises(InputError):
        sinkhorn_knopp(torch.zeros(3, 2), 0.1, n_valid_rows=4)
    with pytest.raises(InputError):
        sinkhorn_knopp(torch.zeros(3, 2, 1), 0.1)
    with pytest.raises(InputError):
        sinkhorn_knopp(torch.zeros(3, 2), 0.1, n_iterations=0)
