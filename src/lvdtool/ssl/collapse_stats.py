"""Collapse statistics of one step: is the teacher image-dependent, are the features spread?

DINO has two failure modes, and both leave the loss looking calm:
- *uniform* collapse: the teacher's head outputs stop depending on the image, centering removes
  what is left, every target is the uniform distribution and the DINO loss sits at ln K;
- *one-hot* collapse: one prototype wins for every image (sharp targets, but the same for all).

Every value here is a float32 scalar tensor computed without gradients in O(B x K) (no B x B
matrix), cheap enough for every step of every run:
- `teacher_entropy`: mean over images of the entropy of the teacher's DINO target, in nats
  (ln K when uniform, small when sharp);
- `teacher_batch_entropy`: entropy of the batch-mean target (ln K when the images use all
  prototypes evenly, 0 when every image picks the same one);
- `teacher_cos`: mean cosine similarity between the teacher's DINO head outputs (logits) of
  *different* images, computed from the norm of the sum of unit vectors; 1 means
  image-independent;
- `cls_spread`: per-dimension standard deviation over the batch of the L2-normalised student CLS
  features, averaged over dimensions and multiplied by sqrt(D): about 1 for features spread
  over the sphere, 0 when every image maps to the same point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STAT_NAMES = ("teacher_entropy", "teacher_batch_entropy", "teacher_cos", "cls_spread")


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1)


def mean_pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """Mean cosine over ordered pairs i != j of the rows of `x` [B, K]: (|sum u|^2 - B) / (B (B - 1))."""
    n = x.shape[0]
    if n < 2:
        return x.new_ones((), dtype=torch.float32)
    unit = F.normalize(x.float(), dim=-1)
    total = unit.sum(dim=0)
    return ((total @ total) - unit.pow(2).sum()) / (n * (n - 1))


@torch.no_grad()
def collapse_stats(teacher_logits: torch.Tensor, teacher_probs: torch.Tensor, student_cls: torch.Tensor) -> dict[str, torch.Tensor]:
    """`teacher_logits`, `teacher_probs`: [n_views * B, K] DINO head outputs and centred targets of
    the teacher's global crops (view-major); `student_cls`: [n_views * B, D] student backbone CLS of
    the same crops. Pairwise statistics use the first view only, so the two crops of one image
    are never counted as a pair of different images."""
    probs = teacher_probs.float()
    n_first = max(1, teacher_logits.shape[0] // 2)
    cls = F.normalize(student_cls.float(), dim=-1)
    spread = cls.std(dim=0, unbiased=False).mean() * math.sqrt(cls.shape[-1]) if cls.shape[0] > 1 else cls.new_zeros(())
    return {
        "teacher_entropy": _entropy(probs).mean(),
        "teacher_batch_entropy": _entropy(probs.mean(dim=0)),
        "teacher_cos": mean_pairwise_cosine(teacher_logits[:n_first]),
        "cls_spread": spread,
    }
