"""Per-crop photometric parameters (colour jitter, grayscale, blur, solarize): sampling as a
pure function of a torch.Generator, and batched application from per-sample tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lvdtool.data.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur_batch,
    grayscale_batch,
    solarize_batch,
)
from lvdtool.errors import ConfigError


@dataclass(frozen=True)
class ColorJitterConfig:
    """Strengths as in torchvision's ColorJitter; applied with probability `prob`."""

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    prob: float = 0.8

    def __post_init__(self) -> None:
        for key, value in (("brightness", self.brightness), ("contrast", self.contrast),
                           ("saturation", self.saturation)):
            if value < 0:
                raise ConfigError(f"ColorJitterConfig: {key} must be >= 0, got {value}")
        if not 0 <= self.hue <= 0.5:
            raise ConfigError(f"ColorJitterConfig: hue must be in [0, 0.5], got {self.hue}")
        if not 0 <= self.prob <= 1:
            raise ConfigError(f"ColorJitterConfig: prob must be in [0, 1], got {self.prob}")


# Jitter operations by id; a crop applies them in its own random order (a permutation of ids).
JITTER_OPS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_hue,
)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


@dataclass(frozen=True)
class PhotometricParams:
    """What happens to the colours of one crop. Factors are multiplicative (1 = identity),
    hue is a shift in turns; blur_sigma 0 means no blur."""

    jitter: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, int, int, int]
    grayscale: bool
    blur_sigma: float
    solarize: bool


_N_DRAWS = 9


def sample_photometric_params(
    generator: torch.Generator,
    jitter: ColorJitterConfig,
    grayscale_prob: float,
    blur_prob: float,
    blur_sigma_range: tuple[float, float],
    solarize_prob: float,
) -> PhotometricParams:
    """Draws a fixed number of random values (so later crops' draws do not depend on which
    options fired)."""
    u = torch.rand(_N_DRAWS, generator=generator, dtype=torch.float64).tolist()
    order = tuple(torch.randperm(4, generator=generator).tolist())

    def factor(strength: float, draw: float) -> float:
        lo = max(0.0, 1.0 - strength)
        return lo + (1.0 + strength - lo) * draw

    blur = u[6] < blur_prob
    lo, hi = blur_sigma_range
    return PhotometricParams(
        jitter=u[0] < jitter.prob,
        brightness=factor(jitter.brightness, u[1]),
        contrast=factor(jitter.contrast, u[2]),
        saturation=factor(jitter.saturation, u[3]),
        hue=-jitter.hue + 2.0 * jitter.hue * u[4],
        order=order,  # type: ignore[arg-type]
        grayscale=u[5] < grayscale_prob,
        blur_sigma=lo + (hi - lo) * u[7] if blur else 0.0,
        solarize=u[8] < solarize_prob,
    )


@dataclass(frozen=True)
class PhotometricBatch:
    """`PhotometricParams` of B crops as tensors: factors [B, 4] (by op id), order [B, 4]."""

    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    grayscale: torch.Tensor
    blur_sigma: torch.Tensor
    solarize: torch.Tensor

    @classmethod
    def stack(cls, params: Sequence[PhotometricParams], device: torch.device | str | None = None) -> PhotometricBatch:
        return cls(
            jitter=torch.tensor([p.jitter for p in params], dtype=torch.bool, device=device),
            factors=torch.tensor(
                [[p.brightness, p.contrast, p.saturation, p.hue] for p in params], dtype=torch.float32, device=device
            ).view(-1, 4),
            order=torch.tensor([list(p.order) for p in params], dtype=torch.long, device=device).view(-1, 4),
            grayscale=torch.tensor([p.grayscale for p in params], dtype=torch.bool, device=device),
            blur_sigma=torch.tensor([p.blur_sigma for p in params], dtype=torch.float32, device=device),
            solarize=torch.tensor([p.solarize for p in params], dtype=torch.bool, device=device),
        )

    def __len__(self) -> int:
        return self.jitter.shape[0]


def color_jitter_batch(x: torch.Tensor, params: PhotometricBatch) -> torch.Tensor:
    """Colour jitter with per-sample factors and per-sample op order.

    At each of the 4 positions, every op runs once on the sub-batch of jittered samples that
    put it at that position (index select + copy back), so each sample sees exactly its own
    4 ops in its own order and no work is spent on identity ops.
    """
    out = x.clone()
    active = params.jitter.to(x.device)
    order = params.order.to(x.device)
    factors = params.factors.to(x.device)
    for position in range(4):
        for op_id, op in enumerate(JITTER_OPS):
            idx = torch.nonzero(active & (order[:, position] == op_id)).flatten()
            if idx.numel() == 0:
                continue
            out[idx] = op(out[idx], factors[idx, op_id])
    return out


def apply_photometric_batch(
    x: torch.Tensor,
    params: PhotometricBatch,
    blur_kernel_size: int = 9,
    solarize_threshold: float = 0.5,
) -> torch.Tensor:
    """Jitter -> grayscale -> blur -> solarize (the official order) on [B, 3, H, W] in [0, 1]."""
    x = color_jitter_batch(x, params)
    x = grayscale_batch(x, params.grayscale)
    if bool((params.blur_sigma > 0).any()):
        x = gaussian_blur_batch(x, params.blur_sigma, blur_kernel_size)
    return solarize_batch(x, params.solarize, solarize_threshold)
