"""Teacher centering: softmax with an EMA centre, or Sinkhorn-Knopp balancing.

Both reduce over ranks with `torch.distributed` only when a process group is initialised
with more than one rank, so they run unchanged in a single process (the official
Sinkhorn-Knopp calls all_reduce unconditionally and crashes there).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lvdtool.errors import InputError


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _all_reduce_(tensor: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    if _world_size() > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


def _check_logits(logits: torch.Tensor, n_valid_rows: int | None, where: str) -> int:
    if logits.ndim != 2:
        raise InputError(f"{where}: teacher logits must be [B, K], got {tuple(logits.shape)}")
    n_valid = logits.shape[0] if n_valid_rows is None else int(n_valid_rows)
    if not 0 <= n_valid <= logits.shape[0]:
        raise InputError(f"{where}: n_valid_rows={n_valid} outside [0, {logits.shape[0]}]")
    return n_valid


CENTER_INITS = ("zeros", "first_batch")


class SoftmaxCenter(nn.Module):
    """Softmax centering: probs = softmax((t - center) / temp), center <- EMA of batch means.

    Call `softmax` then `update` with the same logits (or `forward`, which does both): the
    probabilities of a step use the centre from earlier steps only, as in the official code
    (which defers the reduction; here it is synchronous). The batch mean is the global mean
    over the valid rows of all ranks.

    `init`: "zeros" (the official behaviour) starts the centre at 0, so the first targets are the
    raw teacher logits sharpened (the same sharp target for every image when the freshly
    initialised teacher is nearly image-independent); "first_batch" sets the centre to the first
    batch's mean before that batch's targets are computed (`initialized` records it, and travels
    with checkpoints).
    """

    center: torch.Tensor
    initialized: torch.Tensor

    def __init__(self, dim: int, momentum: float = 0.9, init: str = "zeros") -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise InputError(f"SoftmaxCenter: momentum must be in [0, 1], got {momentum}")
        if init not in CENTER_INITS:
            raise InputError(f"SoftmaxCenter: init must be one of {', '.join(CENTER_INITS)}, got {init!r}")
        self.momentum = momentum
        self.init = init
        self.register_buffer("center", torch.zeros(1, dim, dtype=torch.float32))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def batch_center(self, teacher_logits: torch.Tensor, n_valid_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean over the valid rows of all ranks [1, K], their count) with one reduction."""
        n_valid = _check_logits(teacher_logits, n_valid_rows, "SoftmaxCenter")
        valid = teacher_logits[:n_valid].float()
        stats = torch.cat([valid.sum(dim=0), valid.new_tensor([float(n_valid)])])
        _all_reduce_(stats)
        count = stats[-1]
        return (stats[:-1] / count.clamp(min=1.0)).unsqueeze(0), count

    @torch.no_grad()
    def softmax(self, teacher_logits: torch.Tensor, temp: float, n_valid_rows: int | None = None) -> torch.Tensor:
        """Centred, sharpened float32 probabilities [B, K]; rows past `n_valid_rows` are zero."""
        n_valid = _check_logits(teacher_logits, n_valid_rows, "SoftmaxCenter.softmax")
        probs = F.softmax((teacher_logits.float() - self.center) / temp, dim=-1)
        if n_valid < probs.shape[0]:
            probs[n_valid:] = 0.0
        return probs

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor, n_valid_rows: int | None = None) -> None:
        self._update(*self.batch_center(teacher_logits, n_valid_rows))

    def _update(self, batch_center: torch.Tensor, count: torch.Tensor) -> None:
        updated = self.center * self.momentum + batch_center * (1.0 - self.momentum)
        # No valid row anywhere: keep the centre (decided on device, without a host sync).
        self.center.copy_(torch.where(count > 0, updated, self.center))

    @torch.no_grad()
    def forward(self, teacher_logits: torch.Tensor, temp: float, n_valid_rows: int | None = None) -> torch.Tensor:
        batch_center, count = self.batch_center(teacher_logits, n_valid_rows)
        if self.init == "first_batch":
            first = ~self.initialized & (count > 0)
            self.center.copy_(torch.where(first, batch_center, self.center))
            self.initialized.logical_or_(count > 0)
        probs = self.softmax(teacher_logits, temp, n_valid_rows)
        self._update(batch_center, count)
        return probs


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: torch.Tensor,
    temp: float,
    n_iterations: int = 3,
    n_valid_rows: int | None = None,
) -> torch.Tensor:
    """Sinkhorn-Knopp teacher assignment, balanced over the samples of all ranks.

    Q = exp(logits / temp) is normalised alternately so that each prototype gets total mass
    1/K and each sample 1/B (B = valid rows summed over ranks); the result is scaled by B so
    that each row is a probability distribution. Returns float32 [rows, K]; rows past
    `n_valid_rows` (padding of a masked-patch buffer) are zero.

    Numerical stability: a per-prototype maximum (over all samples of all ranks) is
    subtracted before exp. Scaling a prototype's column by a constant is undone exactly by
    the first prototype normalisation, so the result equals the plain formula.
    """
    n_valid = _check_logits(teacher_logits, n_valid_rows, "sinkhorn_knopp")
    if n_iterations < 1:
        raise InputError(f"sinkhorn_knopp: n_iterations must be >= 1, got {n_iterations}")
    n_rows, n_prototypes = teacher_logits.shape
    out = teacher_logits.new_zeros((n_rows, n_prototypes), dtype=torch.float32)

    scores = teacher_logits[:n_valid].float() / temp  # [b, K]
    proto_max = scores.amax(dim=0) if n_valid > 0 else scores.new_full((n_prototypes,), float("-inf"))
    _all_reduce_(proto_max, dist.ReduceOp.MAX)
    n_total = _all_reduce_(torch.tensor([float(n_valid)], device=scores.device))
    # With no valid row on any rank every tensor below is empty: no special case (and no
    # host synchronisation) is needed.
    q = torch.exp(scores - proto_max)
    tiny = torch.finfo(torch.float32).tiny  # keeps an all-zero row/column at zero instead of NaN
    for _ in range(n_iterations):
        per_prototype = _all_reduce_(q.sum(dim=0, keepdim=True))
        q /= per_prototype.clamp_min(tiny) * n_prototypes
        q /= q.sum(dim=1, keepdim=True).clamp_min(tiny) * n_total
    q *= n_total
    out[:n_valid] = q
    return out
