"""DINOv3's local-crop reweighting of the DINO loss: global term x 2/18, local term x 16/18 x w."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lvdtool.ssl.dino_loss import dino_loss

B, K, N_LOCAL, TEMP = 3, 5, 8, 0.1


def crops():
    torch.manual_seed(0)
    student = torch.randn((2 + N_LOCAL) * B, K)
    teacher = F.softmax(torch.randn(2 * B, K) / 0.07, dim=-1)
    return student, teacher


def pair_means(student, teacher):
    """Batch-mean cross-entropies of every (student crop, teacher view) pair, by hand."""
    s = F.log_softmax(student / TEMP, dim=-1).reshape(2 + N_LOCAL, B, K)
    t = teacher.reshape(2, B, K)
    ce = lambda i, v: -(t[v] * s[i]).sum(-1).mean()  # noqa: E731
    global_pairs = [ce(i, v) for i in range(2) for v in range(2) if i != v]
    local_pairs = [ce(i, v) for i in range(2, 2 + N_LOCAL) for v in range(2)]
    return torch.stack(global_pairs), torch.stack(local_pairs)


def test_weight_one_is_the_current_loss_exactly_and_the_18_pair_average():
    student, teacher = crops()
    current = dino_loss(student, teacher, student_temp=TEMP)
    assert torch.equal(dino_loss(student, teacher, student_temp=TEMP, local_weight=1.0), current)
    g, l = pair_means(student, teacher)
    assert current.item() == pytest.approx(torch.cat([g, l]).mean().item(), rel=1e-6)
    # the reweighted branch agrees with it as the weight tends to 1 (continuity across the special case)
    near = dino_loss(student, teacher, student_temp=TEMP, local_weight=1.0 - 1e-7)
    assert near.item() == pytest.approx(current.item(), rel=1e-5)


def test_weight_half_against_a_hand_computation():
    student, teacher = crops()
    g, l = pair_means(student, teacher)
    expected = 2 / 18 * g.mean() + 16 / 18 * 0.5 * l.mean()
    assert dino_loss(student, teacher, student_temp=TEMP, local_weight=0.5).item() == pytest.approx(expected.item(), rel=1e-6)
    zero = dino_loss(student, teacher, student_temp=TEMP, local_weight=0.0)
    assert zero.item() == pytest.approx((2 / 18 * g.mean()).item(), rel=1e-6)
    # gradients reach only the global crops at weight 0
    student.requires_grad_(True)
    dino_loss(student, teacher, student_temp=TEMP, local_weight=0.0).backward()
    assert student.grad[2 * B:].abs().max() == 0 and student.grad[:2 * B].abs().max() > 0
