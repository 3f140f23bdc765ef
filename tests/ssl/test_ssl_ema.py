import pytest
import torch

from lvdtool.errors import TrainingError
from lvdtool.ssl.ema import ema_update_


def test_ema_by_hand():
    teacher = [torch.tensor([1.0, 2.0]), torch.tensor([[10.0]])]
    student = [torch.tensor([3.0, 0.0]), torch.tensor([[0.0]])]
    ema_update_(teacher, student, 0.75)
    torch.testing.assert_close(teacher[0], torch.tensor([1.5, 1.5]))
    torch.testing.assert_close(teacher[1], torch.tensor([[7.5]]))
    torch.testing.assert_close(student[0], torch.tensor([3.0, 0.0]))  # student untouched


def test_ema_on_module_parameters_in_place():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = [0.9 * t.detach().clone() + 0.1 * s.detach() for t, s in zip(teacher.parameters(), student.parameters())]
    ids = [id(p) for p in teacher.parameters()]
    ema_update_(teacher.parameters(), student.parameters(), 0.9)
    assert [id(p) for p in teacher.parameters()] == ids
    for p, e in zip(teacher.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)
        assert p.grad is None


def test_momentum_one_keeps_and_zero_copies():
    t, s = [torch.tensor([1.0])], [torch.tensor([5.0])]
    ema_update_(t, s, 1.0)
    assert t[0].item() == 1.0
    ema_update_(t, s, 0.0)
    assert t[0].item() == 5.0


def test_mismatch_raises():
    with pytest.raises(TrainingError):
        ema_update_([torch.zeros(2)], [torch.zeros(2), torch.zeros(1)], 0.9)
    with pytest.raises(TrainingError):
        ema_update_([torch.zeros(2)], [torch.zeros(3)], 0.9)
