"""Mixed-resolution training: one crop variant per (global, local) size pair, chosen per iteration.

DINOv3's high-resolution phase draws, at every iteration, one of several resolution pairs with
fixed probabilities from a generator that every rank seeds the same way, so a batch has one
resolution on all ranks and the resolution varies across iterations. Here the draw is a pure
function of (seed, iteration): no state to checkpoint, the same sequence after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvdtool.data.augment import MultiCropAugment
from lvdtool.data.sampler import STREAM_RESOLUTION, derive_seed
from lvdtool.errors import ConfigError
from lvdtool.ssl.masking import BatchMaskSampler


@dataclass(frozen=True)
class CropVariant:
    """The augmentation, iBOT mask grid and decode target of one resolution pair."""

    augment: MultiCropAugment
    mask_sampler: BatchMaskSampler
    decode_min_side: int | None = None

    @property
    def global_size(self) -> int:
        return self.augment.config.global_crops_size


class ResolutionChoice:
    """index(iteration) -> which variant the iteration uses; identical on every rank."""

    def __init__(self, probs: list[float], seed: int) -> None:
        if not probs or min(probs) <= 0:
            raise ConfigError(f"resolution probabilities {probs}: need at least one, all > 0")
        total = float(sum(probs))
        self.probs = [float(p) / total for p in probs]
        self.cumulative = np.cumsum(self.probs)
        self.seed = int(seed)

    def index(self, iteration: int) -> int:
        if len(self.probs) == 1:
            return 0
        u = np.random.default_rng(derive_seed(self.seed, STREAM_RESOLUTION, int(iteration))).random()
        return int(min(np.searchsorted(self.cumulative, u, side="right"), len(self.probs) - 1))
