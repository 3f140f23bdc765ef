"""Block-wise patch masking for iBOT and the per-batch mask tensors the iBOT loss needs.

Deterministic given a `numpy.random.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lvdtool.errors import ConfigError, InputError


@dataclass(frozen=True)
class MaskBlock:
    top: int
    left: int
    height: int
    width: int


class BlockMaskGenerator:
    """Masks rectangular blocks of patches on an (H, W) grid until a target count is reached.

    Each block covers at least `min_block_patches` patches (or the whole target when that is
    smaller, so that a tiny grid still gets masked), has aspect ratio height/width in
    [min_aspect, max_aspect] (max defaults to 1/min_aspect) and fits in the grid; the two
    constraints are checked on the rounded block, so they hold exactly. A block is accepted
    when it adds at least one new patch and no more than the remaining budget; after
    `max_tries` rejected candidates in a row the generator stops, so the final count can fall
    short of the target but never exceeds it.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        min_block_patches: int = 4,
        max_block_patches: int | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        max_tries: int = 10,
    ) -> None:
        height, width = grid
        if height < 1 or width < 1:
            raise ConfigError(f"BlockMaskGenerator: grid must be positive, got {grid}")
        max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
        if not 0 < min_aspect <= max_aspect:
            raise ConfigError(f"BlockMaskGenerator: need 0 < min_aspect <= max_aspect, got {min_aspect}, {max_aspect}")
        if min_block_patches < 1:
            raise ConfigError(f"BlockMaskGenerator: min_block_patches must be >= 1, got {min_block_patches}")
        self.height, self.width = int(height), int(width)
        self.n_patches = self.height * self.width
        self.min_block_patches = int(min_block_patches)
        # Official default: a single block covers at most half of the grid.
        self.max_block_patches = int(max_block_patches) if max_block_patches is not None else self.n_patches // 2
        self.min_aspect = float(min_aspect)
        self.max_aspect = float(max_aspect)
        self.max_tries = int(max_tries)

    def _place_block(
        self, mask: np.ndarray, budget: int, min_area: int, rng: np.random.Generator
    ) -> MaskBlock | None:
        log_aspect = (math.log(self.min_aspect), math.log(self.max_aspect))
        max_area = max(min_area, min(budget, self.max_block_patches))
        for _ in range(self.max_tries):
            area = rng.uniform(min_area, max_area)
            aspect = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < 1 or w < 1 or h > self.height or w > self.width or h * w < min_area:
                continue
            if not self.min_aspect <= h / w <= self.max_aspect:
                continue
            top = int(rng.integers(0, self.height - h + 1))
            left = int(rng.integers(0, self.width - w + 1))
            region = mask[top : top + h, left : left + w]
            added = h * w - int(region.sum())
            if 0 < added <= budget:
                region[...] = True
                return MaskBlock(top, left, h, w)
        return None

    def sample_with_blocks(self, n_target: int, rng: np.random.Generator) -> tuple[np.ndarray, list[MaskBlock]]:
        """Bool mask [H, W] with at most `n_target` patches, and the blocks that made it."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        blocks: list[MaskBlock] = []
        count = 0
        min_area = max(1, min(self.min_block_patches, n_target))
        while count < n_target:
            block = self._place_block(mask, n_target - count, min_area, rng)
            if block is None:
                break
            blocks.append(block)
            count = int(mask.sum())
        return mask, blocks

    def __call__(self, n_target: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample_with_blocks(n_target, rng)[0]


@dataclass(frozen=True)
class BatchMasks:
    """Masks of a batch of global crops and what the iBOT loss needs to use them.

    masks: [n_crops, N] bool, row i for global crop i (same order as the crops).
    mask_indices: [M] int64 flat indices of the masked patches in `masks.flatten()`, i.e.
        rows of the patch tokens flattened over (crop, patch).
    masks_weight: [M] float32, 1 / (number of masked patches of the patch's crop).
    n_masked_patches: M.
    upperbound: the largest M these ratio bins allow (size of a static gather buffer).
    n_masked_crops: crops selected for masking (int(n_crops * mask_prob)).
    """

    masks: torch.Tensor
    mask_indices: torch.Tensor
    masks_weight: torch.Tensor
    n_masked_patches: int
    upperbound: int
    n_masked_crops: int


def batch_masks_from_tensor(
    masks: torch.Tensor, upperbound: int | None = None, n_masked_crops: int | None = None
) -> BatchMasks:
    """Derive indices and per-patch weights from a [n, N] bool mask tensor."""
    if masks.ndim != 2 or masks.dtype != torch.bool:
        raise InputError(
            f"batch_masks_from_tensor: masks must be a [n, N] bool tensor, got {masks.dtype} {tuple(masks.shape)}"
        )
    counts = masks.sum(dim=1)
    per_crop_weight = 1.0 / counts.clamp(min=1).to(torch.float32)
    masks_weight = per_crop_weight.unsqueeze(1).expand_as(masks)[masks]
    mask_indices = masks.flatten().nonzero().flatten()
    n_masked = int(mask_indices.numel())
    return BatchMasks(
        masks=masks,
        mask_indices=mask_indices,
        masks_weight=masks_weight,
        n_masked_patches=n_masked,
        upperbound=n_masked if upperbound is None else int(upperbound),
        n_masked_crops=int((counts > 0).sum()) if n_masked_crops is None else int(n_masked_crops),
    )


class BatchMaskSampler:
    """Samples iBOT masks for a batch of global crops (picklable: pass it to DataLoader workers).

    `int(n_crops * mask_prob)` crops are masked; their target ratios are spread evenly over
    `ratio_range`: the k-th masked crop draws its ratio uniformly from the k-th of as many
    equal bins, its target is int(N * ratio) patches. The masked crops are then placed at
    random positions in the batch.
    """

    def __init__(
        self,
        grid: tuple[int, int] = (16, 16),
        mask_prob: float = 0.5,
        ratio_range: tuple[float, float] = (0.1, 0.5),
        generator: BlockMaskGenerator | None = None,
    ) -> None:
        if not 0.0 <= mask_prob <= 1.0:
            raise ConfigError(f"BatchMaskSampler: mask_prob must be in [0, 1], got {mask_prob}")
        lo, hi = ratio_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"BatchMaskSampler: ratio_range must satisfy 0 <= lo <= hi <= 1, got {ratio_range}")
        self.grid = (int(grid[0]), int(grid[1]))
        self.mask_prob = float(mask_prob)
        self.ratio_range = (float(lo), float(hi))
        self.generator = generator if generator is not None else BlockMaskGenerator(self.grid)
        if (self.generator.height, self.generator.width) != self.grid:
            gen_grid = (self.generator.height, self.generator.width)
            raise ConfigError(f"BatchMaskSampler: generator grid {gen_grid} != grid {self.grid}")

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def ratio_bins(self, n_masked_crops: int) -> np.ndarray:
        return np.linspace(self.ratio_range[0], self.ratio_range[1], n_masked_crops + 1)

    def target_counts(self, n_crops: int, rng: np.random.Generator) -> tuple[list[int], int]:
        """Target masked-patch counts of the masked crops, and the batch upper bound."""
        n_masked_crops = int(n_crops * self.mask_prob)
        bins = self.ratio_bins(n_masked_crops)
        n = self.n_patches
        targets = [int(n * rng.uniform(bins[k], bins[k + 1])) for k in range(n_masked_crops)]
        upperbound = sum(int(n * bins[k + 1]) for k in range(n_masked_crops))
        return targets, upperbound

    def __call__(self, n_crops: int, rng: np.random.Generator) -> BatchMasks:
        if n_crops < 0:
            raise InputError(f"BatchMaskSampler: n_crops must be >= 0, got {n_crops}")
        targets, upperbound = self.target_counts(n_crops, rng)
        rows = [self.generator(t, rng).reshape(-1) for t in targets]
        rows += [np.zeros(self.n_patches, dtype=bool)] * (n_crops - len(targets))
        order = rng.permutation(n_crops)
        stacked = np.stack([rows[i] for i in order]) if n_crops else np.zeros((0, self.n_patches), dtype=bool)
        return batch_masks_from_tensor(torch.from_numpy(stacked), upperbound=upperbound, n_masked_crops=len(targets))


def sample_batch_masks(
    n_crops: int,
    rng: np.random.Generator,
    grid: tuple[int, int] = (16, 16),
    mask_prob: float = 0.5,
    ratio_range: tuple[float, float] = (0.1, 0.5),
) -> BatchMasks:
    """One-call form of `BatchMaskSampler(grid, mask_prob, ratio_range)(n_crops, rng)`."""
    return BatchMaskSampler(grid, mask_prob, ratio_range)(n_crops, rng)
