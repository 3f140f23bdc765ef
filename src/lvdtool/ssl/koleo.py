"""KoLeo regulariser: spreads features by penalising small nearest-neighbour distances."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
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


def koleo_loss_per_view(cls_tokens: torch.Tensor, n_views: int = 2, group_size: int | None = None) -> torch.Tensor:
    """KoLeo of each global view separately (rows view-major, [n_views*B, D]), summed over
    views: two crops of one image are never each other's neighbours. `group_size`: the
    distributed KoLeo (`koleo_loss_distributed`) of each view instead of the per-rank one."""
    if cls_tokens.shape[0] % n_views != 0:
        raise InputError(f"koleo_loss_per_view: {cls_tokens.shape[0]} rows not divisible by n_views={n_views}")
    if group_size is None:
        per_view = [koleo_loss(view) for view in cls_tokens.chunk(n_views)]
    else:
        per_view = [koleo_loss_distributed(view, group_size) for view in cls_tokens.chunk(n_views)]
    return sum(per_view, torch.zeros((), device=cls_tokens.device))


def koleo_loss_distributed(features: torch.Tensor, group_size: int, eps: float = 1e-8) -> torch.Tensor:
    """DINOv3's distributed KoLeo on this rank's features [b, D]: the normalised features of all
    ranks are gathered with gradients (`torch.distributed.nn.all_gather`), the global batch
    (rank-major) is cut into groups of `group_size` samples, and each local sample's nearest
    neighbour is searched within its rank's group (itself excluded). Returns this rank's mean of
    -log(distance + eps); its mean over ranks is the plain KoLeo of each group, averaged over the
    groups. In one process the group is the batch (the plain KoLeo)."""
    if features.ndim != 2:
        raise InputError(f"koleo_loss_distributed: features must be [B, D], got {tuple(features.shape)}")
    x = F.normalize(features.float(), dim=-1, eps=eps)
    local = x.shape[0]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        import torch.distributed.nn as dist_nn  # the autograd-aware collectives

        world, rank = dist.get_world_size(), dist.get_rank()
        with warnings.catch_warnings():  # torch marks it deprecated; it is the autograd-aware gather DINOv3 uses
            warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
            gathered = torch.cat(dist_nn.all_gather(x), dim=0)
    else:
        world, rank, gathered = 1, 0, x
    total = gathered.shape[0]
    if group_size % local or total % group_size:
        raise InputError(f"koleo_loss_distributed: group size {group_size} must be a multiple of the per-rank batch "
                         f"{local} and divide the global batch {total}")
    if world == 1:  # one process: the group is the batch
        return _koleo_in_group(x, x, 0, eps)
    ranks_per_group = group_size // local
    group = gathered[(rank // ranks_per_group) * group_size:(rank // ranks_per_group + 1) * group_size]
    return _koleo_in_group(x, group, (rank % ranks_per_group) * local, eps)


def _koleo_in_group(x: torch.Tensor, group: torch.Tensor, offset: int, eps: float) -> torch.Tensor:
    """x [b, D] are rows offset..offset+b of `group` [G, D] (all L2-normalised)."""
    with torch.no_grad():
        dots = x @ group.t()
        rows = torch.arange(x.shape[0], device=x.device)
        dots[rows, rows + offset] = float("-inf")
        nearest = dots.argmax(dim=1)
    distances = F.pairwise_distance(x, group[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()
