"""The numba backend of MultiCropAugment: crops rendered by numba_kernels.render_crop, one call per
crop, from the crop parameters the torch path uses (same draws, same boxes, same flags).

The resize taps are torch's own: read exactly off torch's antialiased bicubic resize of a few comb
images (rows with a 1 every M pixels: each output's window holds at most one 1, so each output
value is one weight times 1, with no rounding), cached per (input size, output size, flip).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from lvdtool.data.augment.color import gaussian_kernels
from lvdtool.errors import InputError

if TYPE_CHECKING:
    from lvdtool.data.augment.multicrop import CropParams, MultiCropConfig


@lru_cache(maxsize=16384)
def resize_taps(n_in: int, n_out: int, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(start [n_out] int64, weights [n_out, T] float32) of torch's bicubic antialiased resize of
    a length n_in to n_out: output x = sum_j weights[x, j] input[start[x] + j]. `flip`: the taps of
    the resize followed by a mirror."""
    scale = n_in / n_out
    support = 2.0 * max(scale, 1.0)
    span = int(math.ceil(2 * support)) + 4  # candidate window per output, wider than torch's
    period = span + 1  # comb period: a candidate window holds each residue once
    combs = torch.zeros(period, n_in)
    for k in range(period):
        combs[k, k::period] = 1.0
    read = F.interpolate(combs.view(1, 1, period, n_in), size=(period, n_out), mode="bicubic",
                         antialias=True, align_corners=False)[0, 0].numpy()  # [residue, x]
    starts = np.empty(n_out, np.int64)
    rows = []
    for x in range(n_out):
        lo = max(0, min(int(math.floor(scale * (x + 0.5) - support)) - 1, n_in - 1))
        pos = np.arange(lo, min(lo + span, n_in))
        weights = read[pos % period, x]
        nonzero = np.flatnonzero(weights)
        if nonzero.size == 0:
            raise InputError(f"resize_taps: no taps for output {x} of {n_in} -> {n_out}")
        rows.append((int(pos[nonzero[0]]), weights[nonzero[0] : nonzero[-1] + 1]))
    taps = max(len(w) for _, w in rows)
    table = np.zeros((n_out, taps), np.float32)
    for x, (first, weights) in enumerate(rows):
        start = min(first, n_in - taps) if n_in >= taps else 0
        starts[x] = start
        table[x, first - start : first - start + len(weights)] = weights
    if flip:
        return np.ascontiguousarray(starts[::-1]), np.ascontiguousarray(table[::-1])
    return starts, table


def _source(image: torch.Tensor) -> tuple[np.ndarray, bool]:
    if image.device.type != "cpu":
        raise InputError(f"the numba augmentation backend runs on the CPU, got an image on {image.device}")
    if image.dtype == torch.uint8:
        return image.numpy(), True
    if image.dtype != torch.float32:
        image = image.to(torch.float32)
    return image.numpy(), False


def render(
    images: Sequence[torch.Tensor],
    crops: Sequence[CropParams],
    size: int,
    config: MultiCropConfig,
    out: torch.Tensor,
    photometric: bool,
    normalized: bool,
) -> torch.Tensor:
    """Crop i of images[i] ([3, H, W] uint8, or float in [0, 1]) into out[i] ([n, 3, size, size]
    float32, contiguous per crop): what MultiCropAugment._render computes, by numba_kernels."""
    from lvdtool.data.augment.numba_kernels import render_crop

    if out.dtype != torch.float32 or out.device.type != "cpu" or not out[0].is_contiguous():
        raise InputError("numba backend: the output must be float32 crops, contiguous, on the CPU")
    taps = config.blur_kernel_size
    height = max(max(c.box.height for c in crops), size)
    flat = max(max((c.box.width + size) * c.box.height for c in crops), size + taps)
    tmp = np.empty((3, height, size), np.float32)
    row = np.empty(flat, np.float32)
    mean = np.asarray(config.mean, np.float32)
    std = np.asarray(config.std, np.float32)
    threshold = np.float32(config.solarize_threshold)
    no_blur = np.zeros(0, np.float32)
    sources: dict[int, tuple[np.ndarray, bool]] = {}
    target = out.numpy()
    for i, (image, crop) in enumerate(zip(images, crops)):
        src = sources.get(id(image))
        if src is None:
            src = sources[id(image)] = _source(image)
        box, p = crop.box, crop.photometric
        _, img_h, img_w = src[0].shape
        if box.top < 0 or box.left < 0 or box.top + box.height > img_h or box.left + box.width > img_w:
            raise InputError(f"crop_resize: box {box} outside image of size {(img_h, img_w)}")
        x0, wx = resize_taps(box.width, size, crop.flip)
        y0, wy = resize_taps(box.height, size)
        blur = no_blur
        if photometric and p.blur_sigma > 0:
            blur = gaussian_kernels(torch.tensor([p.blur_sigma], dtype=torch.float32), taps)[0].numpy()
        render_crop(src[0], src[1], box.top, box.left, box.height, box.width, x0, wx, y0, wy, target[i], tmp, row,
                    photometric, p.jitter, np.asarray(p.order, np.int64),
                    np.asarray([p.brightness, p.contrast, p.saturation, p.hue], np.float32),
                    p.grayscale, blur, p.solarize, threshold, normalized, mean, std)
    return out
