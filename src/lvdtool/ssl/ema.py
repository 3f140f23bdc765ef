"""Teacher update: exponential moving average of the student's parameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from lvdtool.errors import TrainingError


@torch.no_grad()
def ema_update_(
    teacher_params: Iterable[torch.Tensor],
    student_params: Iterable[torch.Tensor],
    momentum: float,
) -> None:
    """In place: teacher <- momentum * teacher + (1 - momentum) * student.

    Uses multi-tensor `_foreach` kernels (two launches for the whole list). Works on plain
    tensors, parameters and DTensor shards alike, as long as both lists are aligned (same
    order, shapes and placements), e.g. `teacher.parameters()` and `student.parameters()` of
    two identically built and identically sharded modules.
    """
    teacher = [p.detach() for p in teacher_params]
    student = [p.detach() for p in student_params]
    if len(teacher) != len(student):
        raise TrainingError(f"ema_update_: teacher has {len(teacher)} tensors, student {len(student)}")
    for i, (t, s) in enumerate(zip(teacher, student)):
        if t.shape != s.shape:
            raise TrainingError(
                f"ema_update_: tensor {i} has shape {tuple(t.shape)} in the teacher, {tuple(s.shape)} in the student"
            )
    if not teacher:
        return
    torch._foreach_mul_(teacher, momentum)
    torch._foreach_add_(teacher, student, alpha=1.0 - momentum)
