"""iBOT patch-level loss on the masked patches of the student's global crops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lvdtool.errors import InputError


def ibot_patch_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    masks_weight: torch.Tensor,
    n_images: int,
    *,
    student_temp: float = 0.1,
    n_masked_patches: int | None = None,
) -> torch.Tensor:
    """Cross-entropy between teacher and student on masked patches, weighted per image.

    student_logits, teacher_probs: [M, K] head outputs / teacher probabilities of the masked
        patches, gathered in the order of `mask_indices` (rows past `n_masked_patches` are
        padding, e.g. from a static `upperbound`-sized buffer, and are ignored).
    masks_weight: [M'] weight of each masked patch, 1 / (number of masked patches of its
        image) (see `lvdtool.ssl.masking`).
    n_images: the denominator. The official semantics, which we follow, divide by the number
        of *all* global crops in the batch (masked or not, `masks.shape[0]`), so
        loss = sum_i (1/n_i) sum_{p masked in i} CE_p / n_images. Passing the number of
        masked images instead gives the "average over masked images" convention (twice as
        large with mask probability 0.5).
    """
    if n_images < 1:
        raise InputError(f"ibot_patch_loss: n_images must be >= 1, got {n_images}")
    n_valid = masks_weight.shape[0] if n_masked_patches is None else int(n_masked_patches)
    if student_logits.shape[0] < n_valid or teacher_probs.shape[0] < n_valid or masks_weight.shape[0] < n_valid:
        raise InputError(
            f"ibot_patch_loss: n_masked_patches={n_valid} exceeds rows of student {tuple(student_logits.shape)}, "
            f"teacher {tuple(teacher_probs.shape)} or masks_weight {tuple(masks_weight.shape)}"
        )
    s = student_logits[:n_valid].float()
    t = teacher_probs[:n_valid].float()
    per_patch = -(t * F.log_softmax(s / student_temp, dim=-1)).sum(dim=-1)  # [M]
    return (per_patch * masks_weight[:n_valid].float()).sum() / n_images
