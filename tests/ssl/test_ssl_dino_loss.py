import math

import pytest
import torch

from lvdtool.errors import InputError
from lvdtool.ssl.dino_loss import dino_loss, dino_pair_count


def manual_dino_loss(student_crops, teacher_views, temp):
    """Explicit loops over crops, teacher views, samples and prototypes, on Python floats."""
    student_crops = [s.tolist() for s in student_crops]
    teacher_views = [t.tolist() for t in teacher_views]
    total, pairs = 0.0, 0
    n_global = len(teacher_views)
    for c, s in enumerate(student_crops):
        for v, t in enumerate(teacher_views):
            if c < n_global and c == v:
                continue  # a global crop is never matched to its own view
            batch_ce = 0.0
            for b in range(len(s)):
                logits = [x / temp for x in s[b]]
                log_z = math.log(sum(math.exp(x) for x in logits))
                batch_ce += -sum(t[b][k] * (logits[k] - log_z) for k in range(len(logits)))
            total += batch_ce / len(s)
            pairs += 1
    return total / pairs, pairs


def _case(n_local, batch=2, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = [torch.randn(batch, k, generator=g) for _ in range(2 + n_local)]
    teacher = [torch.softmax(torch.randn(batch, k, generator=g), dim=-1) for _ in range(2)]
    return student, teacher


@pytest.mark.parametrize("n_local,k", [(1, 3), (2, 2), (0, 3)])
def test_matches_manual_loops(n_local, k):
    student, teacher = _case(n_local, k=k)
    expected, pairs = manual_dino_loss(student, teacher, 0.1)
    assert pairs == dino_pair_count(2, n_local)
    got = dino_loss(student, teacher, student_temp=0.1)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_stacked_inputs_equal_lists():
    student, teacher = _case(2)
    a = dino_loss(student, teacher)
    b = dino_loss(torch.cat(student), torch.cat(teacher))
    torch.testing.assert_close(a, b)


def test_pair_counts():
    assert dino_pair_count(2, 8) == 18
    assert dino_pair_count(2, 0) == 2
    assert dino_pair_count(1, 3) == 3


def test_global_crop_is_matched_to_the_other_view():
    # Teacher view 0 is one-hot on prototype 0, view 1 on prototype 1. Student global crop 0
    # confidently predicts prototype 1 and crop 1 predicts prototype 0: a perfect cross-view
    # match, so the loss is near 0 (it would be large if crops were matched to their own view).
    teacher = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    student = [torch.tensor([[0.0, 5.0]]), torch.tensor([[5.0, 0.0]])]
    assert dino_loss(student, teacher, student_temp=0.1).item() < 1e-10
    # matched to its own view instead, each pair costs the scaled logit gap 5 / 0.1 = 50
    swapped = dino_loss(student[::-1], teacher, student_temp=0.1)
    assert swapped.item() == pytest.approx(50.0, rel=1e-6)


def test_gradient_is_finite_and_only_student():
    student, teacher = _case(1)
    student = [s.requires_grad_() for s in student]
    dino_loss(student, teacher).backward()
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in student)


def test_bad_shapes_raise():
    student, teacher = _case(1)
    with pytest.raises(InputError):
        dino_loss(torch.cat(student)[:-1], teacher)
    with pytest.raises(InputError):
        dino_loss(student, [t[:, :2] for t in teacher])
