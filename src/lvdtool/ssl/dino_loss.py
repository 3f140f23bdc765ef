"""DINO image-level loss: cross-entropy between teacher and student CLS distributions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lvdtool.errors import InputError


def dino_pair_count(n_global_crops: int, n_local_crops: int) -> int:
    """Number of (student crop, teacher view) pairs: every local crop against every teacher
    view, every global crop against the teacher views of the *other* global crops
    (18 for 2 global + 8 local crops, 2 with no local crop)."""
    return n_local_crops * n_global_crops + n_global_crops * (n_global_crops - 1)


def _as_crop_stack(x: torch.Tensor | Sequence[torch.Tensor], rows_per_crop: int, what: str) -> torch.Tensor:
    """Lists of [B, K] or a stacked [n*B, K] tensor -> [n, B, K]."""
    if not isinstance(x, torch.Tensor):
        x = torch.cat(list(x), dim=0)
    if x.ndim != 2 or x.shape[0] % rows_per_crop != 0:
        raise InputError(f"dino_loss: {what} must be [n_crops*B, K] with B={rows_per_crop}, got {tuple(x.shape)}")
    return x.reshape(-1, rows_per_crop, x.shape[-1])


def dino_loss(
    student_logits: torch.Tensor | Sequence[torch.Tensor],
    teacher_probs: torch.Tensor | Sequence[torch.Tensor],
    *,
    n_global_crops: int = 2,
    student_temp: float = 0.1,
    local_weight: float = 1.0,
) -> torch.Tensor:
    """DINO loss averaged over all cross-view pairs and over the batch.

    student_logits: head outputs of all student crops, crop-major: the `n_global_crops`
        global crops first, then the local crops; a list of [B, K] or one [n_crops*B, K].
    teacher_probs: centred, sharpened teacher probabilities of the global crops, view-major
        and *not* swapped: row block v is teacher view v; a list of [B, K] or [n_global*B, K].

    Global student crop i is matched to every teacher view j != i, each local crop to every
    teacher view; the sum of per-pair batch-mean cross-entropies is divided by
    `dino_pair_count`. With no local crop the divisor is 2 (the official code divides by 3
    there, a quirk we do not reproduce).

    `local_weight` (DINOv3's `reweight_dino_local_loss`): the loss is then
    global_scale * (mean over the global cross pairs) + local_scale * local_weight * (mean over the
    local pairs), with global_scale = global pairs / all pairs (2/18) and local_scale = local pairs /
    all pairs (16/18). At weight 1 that is the single average above, computed as such (bitwise).
    """
    teacher = teacher_probs if isinstance(teacher_probs, torch.Tensor) else torch.cat(list(teacher_probs))
    if teacher.ndim != 2 or teacher.shape[0] % n_global_crops != 0:
        raise InputError(
            f"dino_loss: teacher_probs must be [n_global_crops*B, K] with n_global_crops={n_global_crops}, "
            f"got {tuple(teacher.shape)}"
        )
    batch = teacher.shape[0] // n_global_crops
    teacher = teacher.float().reshape(n_global_crops, batch, -1)
    student = _as_crop_stack(student_logits, batch, "student_logits")
    if student.shape[-1] != teacher.shape[-1]:
        raise InputError(f"dino_loss: student has {student.shape[-1]} prototypes, teacher {teacher.shape[-1]}")
    n_crops = student.shape[0]
    if n_crops < n_global_crops:
        raise InputError(f"dino_loss: {n_crops} student crops, fewer than n_global_crops={n_global_crops}")
    n_pairs = dino_pair_count(n_global_crops, n_crops - n_global_crops)
    if n_pairs == 0:
        raise InputError("dino_loss: no cross-view pair (n_global_crops=1 and no local crop)")

    log_probs = F.log_softmax(student.float() / student_temp, dim=-1)  # [n_crops, B, K]
    # Sum over pairs without materialising them: every crop against the sum of all teacher
    # views, minus each global crop against its own view.
    # (matrix-vector products: no [n_crops, B, K] temporary)
    teacher_sum = teacher.sum(dim=0).reshape(-1)  # [B*K]
    same_view = torch.dot(log_probs[:n_global_crops].reshape(-1), teacher.reshape(-1))
    if local_weight == 1.0:
        all_views = (log_probs.reshape(n_crops, -1) @ teacher_sum).sum()
        return -(all_views - same_view) / (batch * n_pairs)
    if local_weight < 0:
        raise InputError(f"dino_loss: local_weight must be >= 0, got {local_weight}")
    n_local = n_crops - n_global_crops
    global_pairs = n_global_crops * (n_global_crops - 1)
    local_pairs = n_local * n_global_crops
    global_sum = (log_probs[:n_global_crops].reshape(n_global_crops, -1) @ teacher_sum).sum() - same_view
    loss = -global_sum / (batch * n_pairs)  # = (global pairs / all pairs) x the global mean
    if local_pairs:
        local_sum = (log_probs[n_global_crops:].reshape(n_local, -1) @ teacher_sum).sum()
        loss = loss - local_weight * local_sum / (batch * n_pairs)
    return loss
