"""Weights of the three pretraining objectives in the total loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lvdtool.errors import ConfigError


@dataclass(frozen=True)
class SSLLossWeights:
    """total = dino * DINO + ibot * iBOT + koleo * KoLeo (recipe: 1, 1, 0.1).

    A weight of 0 switches the objective off (the caller can then skip computing it).
    """

    dino: float = 1.0
    ibot: float = 1.0
    koleo: float = 0.1

    def __post_init__(self) -> None:
        for key, value in (("dino", self.dino), ("ibot", self.ibot), ("koleo", self.koleo)):
            if value < 0:
                raise ConfigError(f"SSLLossWeights: {key} must be >= 0, got {value}")

    def total(
        self,
        dino: torch.Tensor | None = None,
        ibot: torch.Tensor | None = None,
        koleo: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted sum of the terms given (None or weight 0: left out)."""
        weighted = ((self.dino, dino), (self.ibot, ibot), (self.koleo, koleo))
        terms = [(w, t) for w, t in weighted if t is not None and w != 0]
        if not terms:
            raise ConfigError("SSLLossWeights.total: no loss term with a non-zero weight")
        total = terms[0][0] * terms[0][1]
        for w, t in terms[1:]:
            total = total + w * t
        return total
