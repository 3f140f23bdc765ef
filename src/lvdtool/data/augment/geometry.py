"""Geometric augmentation on tensors: random-resized-crop boxes, crop + bicubic resize, flip."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lvdtool.errors import InputError

CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_MAX_TRIES = 10
N_BOX_DRAWS = 4 * _MAX_TRIES  # uniform float64 draws per box, whichever try fits


@dataclass(frozen=True)
class CropBox:
    """A crop of the source image, in pixels."""

    top: int
    left: int
    height: int
    width: int


def sample_crop_box(
    image_hw: tuple[int, int],
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = CROP_RATIO,
) -> CropBox:
    """Random-resized-crop box, with torchvision's semantics.

    Up to 10 tries of (area fraction ~ U(scale), aspect w/h ~ logU(ratio)); the first box
    that fits is placed uniformly. If none fits, fall back to the largest centred box whose
    aspect is clamped into `ratio`. Always consumes the same number of random draws.
    """
    if int(image_hw[0]) < 1 or int(image_hw[1]) < 1:
        raise InputError(f"sample_crop_box: image size must be positive, got {image_hw}")
    draws = torch.rand(N_BOX_DRAWS, generator=generator, dtype=torch.float64).tolist()
    return crop_box_from_draws(image_hw, scale, draws, ratio)


def crop_box_from_draws(
    image_hw: tuple[int, int],
    scale: tuple[float, float],
    draws: list[float],
    ratio: tuple[float, float] = CROP_RATIO,
) -> CropBox:
    """`sample_crop_box` from its `N_BOX_DRAWS` uniform draws."""
    height, width = int(image_hw[0]), int(image_hw[1])
    if height < 1 or width < 1:
        raise InputError(f"sample_crop_box: image size must be positive, got {image_hw}")
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for t in range(_MAX_TRIES):
        u_area, u_ratio, u_top, u_left = draws[4 * t : 4 * t + 4]
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u_top * (height - h + 1)), height - h)
            left = min(int(u_left * (width - w + 1)), width - w)
            return CropBox(top, left, h, w)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def to_float_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1; float images pass through (as float32)."""
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div_(255.0)
    if not image.is_floating_point():
        raise InputError(f"to_float_image: expected a uint8 or float image, got {image.dtype}")
    return image.to(torch.float32)


def crop_resize(image: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """Crop `box` from a [C, H, W] image (uint8 or float) and resize it to size x size.

    Bicubic with antialiasing (like PIL's resize), clamped to [0, 1]; float32 output.
    """
    if image.ndim != 3:
        raise InputError(f"crop_resize: image must be [C, H, W], got {tuple(image.shape)}")
    _, height, width = image.shape
    if box.top < 0 or box.left < 0 or box.top + box.height > height or box.left + box.width > width:
        raise InputError(f"crop_resize: box {box} outside image of size {(height, width)}")
    patch = to_float_image(image[:, box.top : box.top + box.height, box.left : box.left + box.width])
    if box.height == size and box.width == size:
        # A float input slice may share memory with the caller's image: hand back a copy.
        return patch.clone(memory_format=torch.contiguous_format) if image.is_floating_point() else patch.contiguous()
    out = F.interpolate(patch.unsqueeze(0), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return out.squeeze(0).clamp_(0.0, 1.0)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror the last (width) axis."""
    return x.flip(-1)


def hflip_batch(x: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Mirror the samples of a [B, C, H, W] batch whose flag is set."""
    return torch.where(flags.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
