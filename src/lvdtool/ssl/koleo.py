"""KoLeo regulariser: spreads features by penalising small nearest-neighbour distances."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lvdtool.errors import InputError


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator on one batch of features [B, D].

    Computed in float32: L2-normalise (eps), nearest neighbour = argmax dot product with the
    diagonal excluded, loss = mean_i -log(||x_i - x_nn(i)|| + eps).

    Guards: a batch of one has no neighbour (the estimator is infinite); it returns a float32
    zero instead of inf/NaN. Duplicate rows give distance 0 and a finite loss of -log(eps)
    (the pairwise distance adds eps inside the norm, as the official code does, so the
    gradient stays finite too).
    """
    if features.ndim != 2:
        raise InputError(f"koleo_loss: features must be [B, D], got {tuple(features.shape)}")
    x = features.float()
    n = x.shape[0]
    if n < 2:
        return torch.zeros((), dtype=torch.float32, device=x.device)
    x = F.normalize(x, dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(float("-inf"))
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()


def koleo_loss_per_view(cls_tokens: torch.Tensor, n_views: int = 2) -> torch.Tensor:
    """KoLeo of each global view separately (rows view-major, [n_views*B, D]), summed over
    views: two crops of one image are never each other's neighbours."""
    if cls_tokens.shape[0] % n_views != 0:
        raise InputError(f"koleo_loss_per_view: {cls_tokens.shape[0]} rows not divisible by n_views={n_views}")
    return sum((koleo_loss(view) for view in cls_tokens.chunk(n_views)), torch.zeros((), device=cls_tokens.device))
