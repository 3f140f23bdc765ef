"""DINOv2 multi-crop augmentation: 2 global + n local crops of one decoded image.

Parameters are sampled first (a pure function of the image size, the config and a
torch.Generator, returning dataclasses), then applied; the colour part of the crops of one
size runs as one batch, in place in the crops' output tensor (photometric.apply_photometric_).

Each crop's uniform draws (its box's 40, its flip, its 9 photometric ones) come from one
`torch.rand(50)` call, which yields the same numbers and leaves the generator in the same state
as the three calls it replaces (tests/data_augment/test_augment_equivalence.py checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lvdtool.data.augment import numba_render
from lvdtool.data.augment.color import IMAGENET_MEAN, IMAGENET_STD, normalize_
from lvdtool.data.augment.geometry import (
    CROP_RATIO,
    N_BOX_DRAWS,
    CropBox,
    crop_box_from_draws,
    hflip,
    to_float_image,
)
from lvdtool.data.augment.photometric import (
    N_DRAWS,
    ColorJitterConfig,
    PhotometricParams,
    apply_photometric_,
    on_subset,
    photometric_params_from_draws,
)
from lvdtool.errors import ConfigError, InputError

N_GLOBAL_CROPS = 2
# Crops are rendered and distorted this many floats (1 MiB) at a time: one 224-px crop, nine of
# 98 px, all of a small-data batch. A whole batch of large crops at once falls out of the cache
# between the ~40 passes of the photometric part (measured 25% slower at 16 x 10 paper crops).
_CHUNK_FLOATS = 1 << 18
BACKENDS = ("torch", "numba")


def _pair(value: Sequence[float], key: str) -> tuple[float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 2:
        raise ConfigError(f"MultiCropConfig: {key} must have 2 values, got {value}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class MultiCropConfig:
    """Crop sizes, counts and augmentation strengths (DINOv2 defaults, patch size 14).

    Blur: `blur_probs` are the paper's and configs' probabilities for (global crop 1,
    global crop 2, local crops) = (1.0, 0.1, 0.5). The official code inverts the probability
    in its blur wrapper, so the released models were trained with (0.0, 0.9, 0.5); set
    `blur_as_trained=True` to reproduce that. Solarization only hits the second global crop.
    """

    global_crops_size: int = 224
    local_crops_size: int = 98
    n_local_crops: int = 8
    global_crops_scale: tuple[float, float] = (0.32, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.32)
    crop_ratio: tuple[float, float] = CROP_RATIO
    flip_prob: float = 0.5
    jitter: ColorJitterConfig = field(default_factory=ColorJitterConfig)
    grayscale_prob: float = 0.2
    blur_probs: tuple[float, float, float] = (1.0, 0.1, 0.5)
    blur_as_trained: bool = False
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: int = 9
    solarize_prob: float = 0.2
    solarize_threshold: float = 0.5
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Gram anchoring (DINOv3): each global crop again at this size, same box and flip, no
    # photometric distortion (normalised only). None: no Gram crops. Draws no random number.
    gram_crops_size: int | None = None
    # Who renders the crops on the CPU: "torch" (tensor ops; the bits of every earlier lvd) or
    # "numba" (numba_kernels: one compiled call per crop, ~2x faster; equal to the torch path to
    # float32 rounding). Images on an accelerator always take the torch path. backend.py resolves
    # "auto" before a config is built.
    backend: str = "torch"

    def __post_init__(self) -> None:
        # Accept lists (YAML / Hydra) for the tuple fields.
        pairs = (("global_crops_scale", self.global_crops_scale), ("local_crops_scale", self.local_crops_scale),
                 ("crop_ratio", self.crop_ratio), ("blur_sigma", self.blur_sigma))
        for key, value in pairs:
            object.__setattr__(self, key, _pair(value, key))
        for key, value in (("blur_probs", self.blur_probs), ("mean", self.mean), ("std", self.std)):
            if len(value) != 3:
                raise ConfigError(f"MultiCropConfig: {key} must have 3 values, got {value}")
            object.__setattr__(self, key, tuple(float(v) for v in value))
        if isinstance(self.jitter, dict):
            object.__setattr__(self, "jitter", ColorJitterConfig(**self.jitter))
        sizes = (("global_crops_size", self.global_crops_size), ("local_crops_size", self.local_crops_size),
                 ("gram_crops_size", self.gram_crops_size or 1))
        for key, size in sizes:
            if size < 1:
                raise ConfigError(f"MultiCropConfig: {key} must be >= 1, got {size}")
        if self.n_local_crops < 0:
            raise ConfigError(f"MultiCropConfig: n_local_crops must be >= 0, got {self.n_local_crops}")
        for key, (lo, hi) in (("global_crops_scale", self.global_crops_scale),
                              ("local_crops_scale", self.local_crops_scale)):
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"MultiCropConfig: {key} must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}")
        probs = (("flip_prob", self.flip_prob), ("grayscale_prob", self.grayscale_prob),
                 ("solarize_prob", self.solarize_prob)) + tuple(("blur_probs", p) for p in self.blur_probs)
        for key, p in probs:
            if not 0 <= p <= 1:
                raise ConfigError(f"MultiCropConfig: {key} must be in [0, 1], got {p}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"MultiCropConfig: backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0:
            raise ConfigError(f"MultiCropConfig: blur_kernel_size must be odd, got {self.blur_kernel_size}")

    @property
    def effective_blur_probs(self) -> tuple[float, float, float]:
        """Blur probabilities actually used: `blur_probs`, or 1 - p each with `blur_as_trained`."""
        if self.blur_as_trained:
            return tuple(1.0 - p for p in self.blur_probs)  # type: ignore[return-value]
        return self.blur_probs


@dataclass(frozen=True)
class CropParams:
    box: CropBox
    flip: bool
    photometric: PhotometricParams


@dataclass(frozen=True)
class MultiCropParams:
    global_crops: tuple[CropParams, ...]
    local_crops: tuple[CropParams, ...]


def _sample_crop(
    image_hw: tuple[int, int],
    scale: tuple[float, float],
    blur_prob: float,
    solarize_prob: float,
    config: MultiCropConfig,
    generator: torch.Generator,
) -> CropParams:
    # = sample_crop_box, one rand(()) for the flip, sample_photometric_params: the same draws
    u = torch.rand(N_BOX_DRAWS + 1 + N_DRAWS, generator=generator, dtype=torch.float64).tolist()
    order = torch.randperm(4, generator=generator).tolist()
    box = crop_box_from_draws(image_hw, scale, u[:N_BOX_DRAWS], config.crop_ratio)
    flip = u[N_BOX_DRAWS] < config.flip_prob
    photometric = photometric_params_from_draws(
        u[N_BOX_DRAWS + 1 :], order, config.jitter, config.grayscale_prob, blur_prob, config.blur_sigma, solarize_prob
    )
    return CropParams(box, flip, photometric)


def sample_multicrop_params(
    image_hw: tuple[int, int], config: MultiCropConfig, generator: torch.Generator
) -> MultiCropParams:
    """All random choices for one image, in a fixed draw order: global 1, global 2, locals."""
    blur_g1, blur_g2, blur_local = config.effective_blur_probs
    global_crops = (
        _sample_crop(image_hw, config.global_crops_scale, blur_g1, 0.0, config, generator),
        _sample_crop(image_hw, config.global_crops_scale, blur_g2, config.solarize_prob, config, generator),
    )
    local_crops = tuple(
        _sample_crop(image_hw, config.local_crops_scale, blur_local, 0.0, config, generator)
        for _ in range(config.n_local_crops)
    )
    return MultiCropParams(global_crops, local_crops)


def _resized(image: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """`crop_resize` of a float [3, H, W] image without its clamp (the caller clamps the batch):
    the same interpolation call, so the same values."""
    _, height, width = image.shape
    if box.top < 0 or box.left < 0 or box.top + box.height > height or box.left + box.width > width:
        raise InputError(f"crop_resize: box {box} outside image of size {(height, width)}")
    patch = image[:, box.top : box.top + box.height, box.left : box.left + box.width]
    if box.height == size and box.width == size:
        return patch
    return F.interpolate(patch.unsqueeze(0), size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]


def _as_rgb(image: torch.Tensor) -> torch.Tensor:
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise InputError(f"MultiCropAugment: image must be [3, H, W] (or [1, H, W]), got {tuple(image.shape)}")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


class MultiCropAugment:
    """Callable: (uint8 [3, H, W] image, torch.Generator) -> {"global_crops": [2 x 3xGxG],
    "local_crops": [n_local x 3xLxL]} (+ "gram_crops": [2 x 3xSxS] with `gram_crops_size`),
    float32, normalised with the ImageNet mean/std."""

    def __init__(self, config: MultiCropConfig | None = None) -> None:
        self.config = config if config is not None else MultiCropConfig()

    def sample_params(self, image_hw: tuple[int, int], generator: torch.Generator) -> MultiCropParams:
        return sample_multicrop_params(image_hw, self.config, generator)

    def geometric(self, image: torch.Tensor, crops: Sequence[CropParams], size: int) -> torch.Tensor:
        """Crop, resize and flip: [n, 3, size, size] float in [0, 1]."""
        image = _as_rgb(image)
        return self._render([image] * len(crops), crops, size)

    def _render(self, images: Sequence[torch.Tensor], crops: Sequence[CropParams], size: int,
                photometric: bool = False, normalized: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
        """Crop i of images[i]: geometry into one [n, 3, size, size] tensor, then (optionally)
        the photometric part and the normalisation in place on it, a cache-sized chunk of crops
        at a time (every operation is per crop, so chunking changes no value). `out`: a
        [n, 3, size, size] view to write into instead of a new tensor."""
        out = torch.empty(len(crops), 3, size, size) if out is None else out
        if self._numba(images):
            return numba_render.render(images, crops, size, self.config, out, photometric, normalized)
        as_float: dict[int, torch.Tensor] = {}  # each image converted once, not once per crop (same values)
        step = max(1, _CHUNK_FLOATS // (3 * size * size))
        for start in range(0, len(crops), step):
            chunk, x = crops[start : start + step], out[start : start + step]
            for i, (image, crop) in enumerate(zip(images[start : start + step], chunk)):
                source = as_float.get(id(image))
                if source is None:
                    source = as_float[id(image)] = to_float_image(image)
                x[i] = _resized(source, crop.box, size)
            x.clamp_(0.0, 1.0)  # crop_resize's clamp, once for the chunk
            on_subset(x, [i for i, c in enumerate(chunk) if c.flip], lambda sub, _: hflip(sub))
            if photometric:
                apply_photometric_(x, [c.photometric for c in chunk], self.config.blur_kernel_size,
                                   self.config.solarize_threshold)
            if normalized:
                normalize_(x, self.config.mean, self.config.std)
        return out

    def _numba(self, images: Sequence[torch.Tensor]) -> bool:
        return self.config.backend == "numba" and all(im.device.type == "cpu" for im in images)

    def _source(self, image: torch.Tensor) -> torch.Tensor:
        """The image the crops are cut from: as float once for the torch path, as is for numba."""
        return image if self._numba([image]) else to_float_image(image)

    def _crops(
        self, image: torch.Tensor, crops: Sequence[CropParams], size: int, normalized: bool
    ) -> list[torch.Tensor]:
        if not crops:
            return []
        return list(self._render([image] * len(crops), crops, size, photometric=True, normalized=normalized).unbind(0))

    def apply(
        self, image: torch.Tensor, params: MultiCropParams, normalized: bool = True
    ) -> dict[str, list[torch.Tensor]]:
        """Apply sampled parameters; `normalized=False` returns the crops in [0, 1]."""
        cfg = self.config
        image = self._source(_as_rgb(image))  # once for all crop sizes
        out = {
            "global_crops": self._crops(image, params.global_crops, cfg.global_crops_size, normalized),
            "local_crops": self._crops(image, params.local_crops, cfg.local_crops_size, normalized),
        }
        if cfg.gram_crops_size:
            out["gram_crops"] = self.gram_crops(image, params.global_crops, normalized)
        return out

    def gram_crops(self, image: torch.Tensor, global_crops: Sequence[CropParams], normalized: bool = True) -> list[torch.Tensor]:
        """The global crops' boxes and flips at `gram_crops_size`, without photometric distortion."""
        size = self.config.gram_crops_size
        if not size:
            raise InputError("MultiCropAugment.gram_crops: gram_crops_size is not set")
        return list(self._render([_as_rgb(image)] * len(global_crops), global_crops, size,
                                 normalized=normalized).unbind(0))

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> dict[str, list[torch.Tensor]]:
        image = _as_rgb(image)
        return self.apply(image, self.sample_params((image.shape[1], image.shape[2]), generator))

    def batch(self, images: Sequence[torch.Tensor], generators: Sequence[torch.Generator]) -> dict[str, torch.Tensor]:
        """The crops of several images at once, stacked as `collate_multicrop` stacks them:
        global_crops [2B, 3, G, G] view-major, local_crops [n_local*B, 3, L, L] crop-major.

        Image i's crops use `generators[i]` exactly as `self(images[i], generators[i])` does (same
        draws, same order); the photometric part then runs once per crop size over the whole batch
        instead of once per image, which is most of the cost for small crops.
        """
        if len(images) != len(generators) or not images:
            raise InputError(f"MultiCropAugment.batch: {len(images)} images, {len(generators)} generators")
        images = [_as_rgb(im) for im in images]
        params = [self.sample_params((im.shape[1], im.shape[2]), g) for im, g in zip(images, generators)]
        images = [self._source(im) for im in images]  # once for all crop sizes
        cfg = self.config
        out = {
            "global_crops": self._stacked(images, [p.global_crops for p in params], cfg.global_crops_size),
            "local_crops": self._stacked(images, [p.local_crops for p in params], cfg.local_crops_size),
        }
        if cfg.gram_crops_size:  # after the other crops, from the same parameters: their draws are unchanged
            out["gram_crops"] = self._stacked(images, [p.global_crops for p in params], cfg.gram_crops_size,
                                              photometric=False)
        return out

    def _stacked(self, images: Sequence[torch.Tensor], crops: Sequence[Sequence[CropParams]], size: int,
                 photometric: bool = True) -> torch.Tensor:
        n_views = len(crops[0])
        if n_views == 0:
            return torch.empty(0)
        if 3 * size * size * n_views >= _CHUNK_FLOATS // 2:
            # Large crops image by image, into the view-major slots: an image's crops read the
            # same (cached) source, where view-major order reads a different image per crop
            # (measured 25-40% slower at the paper sizes).
            out = torch.empty(n_views, len(images), 3, size, size)
            for i, image in enumerate(images):
                self._render([image] * n_views, crops[i], size, photometric, normalized=True, out=out[:, i])
            return out.view(n_views * len(images), 3, size, size)
        order = [(i, v) for v in range(n_views) for i in range(len(images))]  # view-major
        return self._render([images[i] for i, _ in order], [crops[i][v] for i, v in order], size,
                            photometric=photometric, normalized=True)
