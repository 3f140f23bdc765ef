"""Collate multi-crop samples into one training batch, with the iBOT masks of its global crops."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lvdtool.errors import InputError

if TYPE_CHECKING:  # only the type: collate takes the mask sampler as an argument
    from lvdtool.ssl.masking import BatchMasks

MaskGeneratorFn = Callable[[int, np.random.Generator], "BatchMasks"]


def _stack_view_major(samples: Sequence[Mapping[str, Any]], key: str) -> torch.Tensor:
    """[n_views * B, ...]: all samples' view 0, then all samples' view 1, ..."""
    n_views = len(samples[0][key])
    for i, s in enumerate(samples):
        if len(s[key]) != n_views:
            raise InputError(f"collate_multicrop: sample {i} has {len(s[key])} {key}, sample 0 has {n_views}")
    if n_views == 0:
        return torch.empty(0)
    return torch.stack([s[key][v] for v in range(n_views) for s in samples])


def collate_multicrop(
    samples: Sequence[Mapping[str, Any]],
    mask_generator_fn: MaskGeneratorFn,
    rng: np.random.Generator,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Batch the outputs of `MultiCropAugment` (optionally with an int "label" per sample).

    Returns:
      global_crops [n_global*B, 3, H, W], view-major (all first views, then all second views);
      local_crops [n_local*B, 3, h, w], crop-major (empty tensor when there are none);
      masks [n_global*B, N] bool, row i for global crop i; mask_indices [M] flat indices into
      masks.flatten(); masks_weight [M]; n_masked_patches (int M); upperbound (int, static
      bound on M); labels [B] int64 when every sample has a "label".
    `mask_generator_fn(n_crops, rng)` returns a `lvdtool.ssl.masking.BatchMasks`, e.g. a
    `BatchMaskSampler(grid=(G // patch, G // patch))`.
    """
    if not samples:
        raise InputError("collate_multicrop: empty batch")
    global_crops = _stack_view_major(samples, "global_crops")
    local_crops = _stack_view_major(samples, "local_crops")
    if dtype is not None:
        global_crops = global_crops.to(dtype)
        local_crops = local_crops.to(dtype)
    out = attach_masks(global_crops, local_crops, mask_generator_fn, rng)
    if all("label" in s for s in samples):
        out["labels"] = torch.tensor([int(s["label"]) for s in samples], dtype=torch.long)
    return out


def attach_masks(
    global_crops: torch.Tensor,
    local_crops: torch.Tensor,
    mask_generator_fn: MaskGeneratorFn,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """A batch from crops already stacked as `collate_multicrop` stacks them (global view-major,
    local crop-major), with the iBOT masks of the global crops."""
    batch_masks = mask_generator_fn(global_crops.shape[0], rng)
    if batch_masks.masks.shape[0] != global_crops.shape[0]:
        raise InputError(
            f"collate_multicrop: mask generator returned {batch_masks.masks.shape[0]} masks "
            f"for {global_crops.shape[0]} global crops"
        )
    return {
        "global_crops": global_crops,
        "local_crops": local_crops,
        "masks": batch_masks.masks,
        "mask_indices": batch_masks.mask_indices,
        "masks_weight": batch_masks.masks_weight,
        "n_masked_patches": batch_masks.n_masked_patches,
        "upperbound": batch_masks.upperbound,
    }
