"""Per-crop photometric parameters (colour jitter, grayscale, blur, solarize): sampling as a
pure function of a torch.Generator, and batched application.

The application plans on the host: from each crop's flags and op order it knows which crops
each operation touches, runs it once on that subset (a slice view where the subset is a run
of crops, else one gather and one scatter), in place, and never runs an operation on crops
that do not use it (the blur, grayscale and solarize of unflagged crops were full passes over
the whole batch before). The per-element arithmetic is unchanged, so is the output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lvdtool.data.augment.color import (
    adjust_brightness_,
    adjust_contrast_,
    adjust_hue_,
    adjust_saturation_,
    gaussian_blur_,
    gaussian_kernels,
    grayscale_,
    solarize_,
)
from lvdtool.errors import ConfigError, InputError


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
JITTER_OPS: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (  # in place
    adjust_brightness_,
    adjust_contrast_,
    adjust_saturation_,
    adjust_hue_,
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


N_DRAWS = 9  # uniform draws per crop, then one randperm(4) for the jitter order


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
    u = torch.rand(N_DRAWS, generator=generator, dtype=torch.float64).tolist()
    order = tuple(torch.randperm(4, generator=generator).tolist())
    return photometric_params_from_draws(u, order, jitter, grayscale_prob, blur_prob, blur_sigma_range,
                                         solarize_prob)


def photometric_params_from_draws(
    u: Sequence[float],
    order: Sequence[int],
    jitter: ColorJitterConfig,
    grayscale_prob: float,
    blur_prob: float,
    blur_sigma_range: tuple[float, float],
    solarize_prob: float,
) -> PhotometricParams:
    """`sample_photometric_params` from its `N_DRAWS` uniform draws and its jitter order."""

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
        order=tuple(order),  # type: ignore[arg-type]
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


@dataclass(frozen=True)
class _Plan:
    """Host-side view of B crops' parameters: flags and orders as lists (to plan subsets
    without device syncs), factors [B, 4] and sigmas [B] as float32 tensors on the device."""

    jitter: list[bool]
    order: list[tuple[int, ...]]
    factors: torch.Tensor
    grayscale: list[bool]
    blur_sigma: torch.Tensor
    blur: list[bool]
    solarize: list[bool]

    @classmethod
    def of(cls, params: Sequence[PhotometricParams] | PhotometricBatch, device: torch.device) -> _Plan:
        if isinstance(params, PhotometricBatch):
            sigma = params.blur_sigma.to(device)
            return cls(params.jitter.tolist(), [tuple(o) for o in params.order.tolist()], params.factors.to(device),
                       params.grayscale.tolist(), sigma, (params.blur_sigma > 0).tolist(), params.solarize.tolist())
        factors = torch.tensor([[p.brightness, p.contrast, p.saturation, p.hue] for p in params],
                               dtype=torch.float32, device=device).view(-1, 4)
        sigma = torch.tensor([p.blur_sigma for p in params], dtype=torch.float32, device=device)
        return cls([p.jitter for p in params], [p.order for p in params], factors, [p.grayscale for p in params],
                   sigma, [p.blur_sigma > 0 for p in params], [p.solarize for p in params])


# Crops at least this large run as slice views, one call per run of consecutive crops; smaller
# ones are gathered into one tensor, where one call's overhead outweighs the gather's copy.
_VIEW_MIN_PIXELS = 96 * 96


def _runs(idx: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i in idx:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def on_subset(
    x: torch.Tensor, idx: list[int], fn: Callable[[torch.Tensor, slice | torch.Tensor], torch.Tensor]
) -> None:
    """x[idx] <- fn(x[idx], where) for the crops `idx` (sorted); `where` indexes per-crop tensors."""
    if not idx:
        return
    runs = _runs(idx)
    if len(runs) == 1 or x.shape[2] * x.shape[3] >= _VIEW_MIN_PIXELS:
        for a, b in runs:
            view = x[a:b]
            out = fn(view, slice(a, b))
            if out.data_ptr() != view.data_ptr():
                view.copy_(out)
        return
    where = torch.tensor(idx, device=x.device)
    x.index_copy_(0, where, fn(x.index_select(0, where), where))


def _jitter_(x: torch.Tensor, plan: _Plan) -> None:
    for position in range(4):
        for op_id, op in enumerate(JITTER_OPS):
            idx = [i for i, (on, order) in enumerate(zip(plan.jitter, plan.order)) if on and order[position] == op_id]
            on_subset(x, idx, lambda sub, where, op=op, op_id=op_id: op(sub, plan.factors[where, op_id]))


def apply_photometric_(
    x: torch.Tensor,
    params: Sequence[PhotometricParams] | PhotometricBatch,
    blur_kernel_size: int = 9,
    solarize_threshold: float = 0.5,
) -> torch.Tensor:
    """`apply_photometric_batch` in place on x (float32 [B, 3, H, W] in [0, 1]); returns x."""
    if len(params) != x.shape[0]:
        raise InputError(f"apply_photometric_: {len(params)} parameter sets for {x.shape[0]} crops")
    plan = _Plan.of(params, x.device)
    _jitter_(x, plan)
    on_subset(x, [i for i, on in enumerate(plan.grayscale) if on], lambda sub, _: grayscale_(sub))
    on_subset(x, [i for i, on in enumerate(plan.blur) if on], lambda sub, where: gaussian_blur_(
        sub, gaussian_kernels(plan.blur_sigma[where], blur_kernel_size), out=sub))
    on_subset(x, [i for i, on in enumerate(plan.solarize) if on], lambda sub, _: solarize_(sub, solarize_threshold))
    return x


def color_jitter_batch(x: torch.Tensor, params: PhotometricBatch) -> torch.Tensor:
    """Colour jitter with per-sample factors and per-sample op order (a new tensor).

    At each of the 4 positions, every op runs once on the subset of jittered samples that put
    it at that position, so each sample sees exactly its own 4 ops in its own order and no work
    is spent on identity ops.
    """
    out = x.clone()
    _jitter_(out, _Plan.of(params, x.device))
    return out


def apply_photometric_batch(
    x: torch.Tensor,
    params: PhotometricBatch,
    blur_kernel_size: int = 9,
    solarize_threshold: float = 0.5,
) -> torch.Tensor:
    """Jitter -> grayscale -> blur -> solarize (the official order) on [B, 3, H, W] in [0, 1]."""
    return apply_photometric_(x.clone(), params, blur_kernel_size, solarize_threshold)
