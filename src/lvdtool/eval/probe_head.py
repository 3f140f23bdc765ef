"""A grid of linear classifiers (feature sets x learning rates) evaluated in one pass.

The same head serves both linear protocols: on cached features, and on features from a
live frozen-backbone forward with augmentation. The stage owns the backbone; the head
only sees a dict of feature tensors.
"""

from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lvdtool.errors import ConfigError, InputError

INIT_STD = 0.01  # DINOv2's linear classifiers: weight ~ N(0, 0.01^2), bias 0


def _init_seed(seed: int, name: str) -> int:
    # Per feature set, so adding or removing a set leaves the others' start unchanged.
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


class LinearGridHead(nn.Module):
    """For each feature set, one linear classifier per learning rate, stacked in a single
    weight [n_lrs, C, D] and bias [n_lrs, C].

    One matrix product per feature set gives all its classifiers' logits and one backward
    all their gradients; `GridSGD` applies each classifier's own learning rate. All
    classifiers of a feature set start from the same weights, so they differ only by their
    learning rate and a classifier trained in the grid equals one trained alone.
    """

    def __init__(
        self,
        feature_dims: Mapping[str, int],
        num_classes: int,
        lrs: Sequence[float],
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not feature_dims:
            raise ConfigError("LinearGridHead: feature_dims is empty")
        if not lrs:
            raise ConfigError("LinearGridHead: lrs is empty")
        if num_classes < 1:
            raise ConfigError(f"LinearGridHead: num_classes must be >= 1, got {num_classes}")
        self.feature_names: tuple[str, ...] = tuple(feature_dims)
        self.lrs: tuple[float, ...] = tuple(float(lr) for lr in lrs)
        self.num_classes = num_classes
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        n_lrs = len(self.lrs)
        for name, dim in feature_dims.items():
            if not name or "." in name:
                raise ConfigError(f"LinearGridHead: feature set name {name!r} must be non-empty, without '.'")
            if dim < 1:
                raise ConfigError(f"LinearGridHead: feature set {name!r} has dimension {dim}")
            generator = torch.Generator().manual_seed(_init_seed(seed, name))
            start = torch.randn(num_classes, dim, generator=generator) * INIT_STD
            self.weights[name] = nn.Parameter(start.expand(n_lrs, -1, -1).clone())
            self.biases[name] = nn.Parameter(torch.zeros(n_lrs, num_classes))

    @property
    def num_classifiers(self) -> int:
        return len(self.feature_names) * len(self.lrs)

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits [n_lrs, B, C] per feature set; features[name] is [B, D_name] (extra keys ignored)."""
        logits: dict[str, torch.Tensor] = {}
        n_lrs, num_classes = len(self.lrs), self.num_classes
        for name in self.feature_names:
            if name not in features:
                raise InputError(f"LinearGridHead: feature set {name!r} missing from the input")
            weight, bias = self.weights[name], self.biases[name]
            x = features[name]
            if x.dim() != 2 or x.shape[1] != weight.shape[2]:
                raise InputError(
                    f"LinearGridHead: feature set {name!r} must be [B, {weight.shape[2]}], "
                    f"got shape {tuple(x.shape)}"
                )
            # One [B, D] x [D, n_lrs*C] product instead of n_lrs small ones.
            flat = F.linear(x.to(weight.dtype), weight.reshape(n_lrs * num_classes, -1), bias.reshape(-1))
            logits[name] = flat.view(x.shape[0], n_lrs, num_classes).transpose(0, 1)
        return logits

    def diverged(self) -> dict[str, torch.Tensor]:
        """Per feature set, a bool [n_lrs] marking classifiers whose parameters are not finite."""
        return {
            name: ~(
                torch.isfinite(self.weights[name]).flatten(1).all(dim=1)
                & torch.isfinite(self.biases[name]).all(dim=1)
            )
            for name in self.feature_names
        }


def grid_losses(logits: Mapping[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per feature set, the mean cross-entropy over the batch of each classifier: [n_lrs]."""
    losses: dict[str, torch.Tensor] = {}
    for name, grid_logits in logits.items():
        n_lrs, batch, _ = grid_logits.shape
        if labels.shape != (batch,):
            raise InputError(f"grid_losses: labels must be [{batch}], got shape {tuple(labels.shape)}")
        # [B, n_lrs, C] is the memory layout the head produces: rows of classes stay
        # contiguous and the cross-entropy takes its fast 2-D path.
        flat = grid_logits.transpose(0, 1).reshape(batch * n_lrs, -1)
        targets = labels.to(grid_logits.device).repeat_interleave(n_lrs)
        per_row = F.cross_entropy(flat, targets, reduction="none")
        losses[name] = per_row.view(batch, n_lrs).mean(dim=0)
    return losses


def grid_cross_entropy(logits: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Sum over all classifiers of their mean cross-entropy: a scalar whose gradient with
    respect to each classifier is that classifier's own loss gradient."""
    return torch.stack([loss.sum() for loss in grid_losses(logits, labels).values()]).sum()
