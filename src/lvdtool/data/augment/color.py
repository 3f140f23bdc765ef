"""Photometric pixel operations on float RGB batches [B, 3, H, W] in [0, 1].

Every operation takes one parameter per sample (a [B] tensor), so a whole batch of crops is
processed in a few kernels on any device; a single image is a batch of one. Semantics follow
torchvision's tensor transforms (ITU-R 601-2 luma, blends clamped to [0, 1]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lvdtool.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[B] parameters -> [B, 1, 1, 1] on x's device and dtype."""
    return values.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _check_batch(x: torch.Tensor, where: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"{where}: expected an RGB batch [B, 3, H, W], got {tuple(x.shape)}")


def luma(x: torch.Tensor) -> torch.Tensor:
    """Grayscale [B, 1, H, W] of an RGB batch."""
    w = torch.tensor(LUMA_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1]."""
    f = _per_sample(factor, x)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean grey level of each image.

    The mean is accumulated in float64: a float32 reduction's rounding depends on how the batch is
    split across threads, so the same image would get a slightly different mean alone and in a
    batch (1e-6 at 224 px); in float64 that difference vanishes before the cast back."""
    mean = luma(x).double().mean(dim=(1, 2, 3), keepdim=True).to(x.dtype)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with each image's own grayscale version."""
    return _blend(x, luma(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB -> HSV, all channels in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = x.unbind(dim=1)
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    delta = maxc - minc
    grey = delta == 0
    safe_delta = torch.where(grey, torch.ones_like(delta), delta)
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    # Hue sector: which channel is the maximum decides the 60-degree sector.
    hue6 = torch.where(
        maxc == r,
        (g - b) / safe_delta,
        torch.where(maxc == g, 2.0 + (b - r) / safe_delta, 4.0 + (r - g) / safe_delta),
    )
    hue = torch.where(grey, torch.zeros_like(hue6), torch.remainder(hue6 / 6.0, 1.0))
    return torch.stack([hue, sat, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `rgb_to_hsv`: channel n in (r, g, b) = v - v s clamp(min(k, 4 - k), 0, 1),
    k = (n' + 6 h) mod 6 with n' = 5, 3, 1."""
    hue, sat, val = x.unbind(dim=1)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return val.unsqueeze(1) - (val * sat).unsqueeze(1) * ramp


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` turns (in [-0.5, 0.5]) per sample."""
    hsv = rgb_to_hsv(x)
    hue = torch.remainder(hsv[:, 0] + shift.to(device=x.device, dtype=x.dtype).view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp_(0.0, 1.0)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Three-channel grayscale."""
    return luma(x).expand_as(x).contiguous()


def grayscale_batch(x: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    return torch.where(flags.to(x.device).view(-1, 1, 1, 1), grayscale(x), x)


def solarize_batch(x: torch.Tensor, flags: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert pixels >= threshold in flagged samples. 0.5 on [0, 1] selects exactly the
    uint8 values >= 128 of the official threshold 128."""
    solarized = torch.where(x >= threshold, 1.0 - x, x)
    return torch.where(flags.to(x.device).view(-1, 1, 1, 1), solarized, x)


def gaussian_kernels(sigmas: torch.Tensor, kernel_size: int = 9) -> torch.Tensor:
    """[B, kernel_size] normalised 1-D Gaussian kernels; sigma <= 0 gives the identity (a
    centred delta), so unblurred samples pass through a batched blur exactly unchanged."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InputError(f"gaussian_kernels: kernel_size must be odd and positive, got {kernel_size}")
    sigmas = sigmas.to(torch.float32)
    half = (kernel_size - 1) / 2.0
    pos = torch.arange(kernel_size, dtype=torch.float32, device=sigmas.device) - half
    safe = torch.where(sigmas > 0, sigmas, torch.ones_like(sigmas)).view(-1, 1)
    weights = torch.exp(-0.5 * (pos / safe) ** 2)
    weights = weights / weights.sum(dim=1, keepdim=True)
    delta = (pos == 0).to(torch.float32).expand_as(weights)
    return torch.where((sigmas > 0).view(-1, 1), weights, delta)


def gaussian_blur_batch(x: torch.Tensor, sigmas: torch.Tensor, kernel_size: int = 9) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (0 = no blur), reflect padding."""
    _check_batch(x, "gaussian_blur_batch")
    b, c, h, w = x.shape
    pad = kernel_size // 2
    if pad >= h or pad >= w:
        raise InputError(f"gaussian_blur_batch: image {h}x{w} too small for kernel_size={kernel_size}")
    kernels = gaussian_kernels(sigmas.to(x.device), kernel_size).to(x.dtype)  # [B, k]
    kernels = kernels.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) group
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (pad, pad, 0, 0), mode="reflect"), kernels.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect"), kernels.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)


def normalize(
    x: torch.Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """(x - mean) / std per channel, for [3, H, W] or [B, 3, H, W]."""
    shape = (3, 1, 1)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(shape)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(shape)
    return (x - m) / s
