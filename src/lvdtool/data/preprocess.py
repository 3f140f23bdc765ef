"""A configurable inference preprocessing for descriptor models: resize, optional centre crop, mean/std.

Workers return uint8 CHW tensors; `normalize_with` runs on the device, batched. Presets live in
`configs/preprocess/` (`sscd`: shorter side 288, no crop; `sscd_skew320`: a 320 x 320 square resize,
both with ImageNet mean/std, as the SSCD README recommends).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from PIL import Image

from lvdtool.data.decode import decode_rgb, to_uint8_chw
from lvdtool.data.eval_transform import IMAGENET_MEAN, IMAGENET_STD
from lvdtool.errors import ConfigError

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass
class PreprocessConfig:
    resize: int = 288                 # shorter side after resizing (square=true: both sides)
    square: bool = False              # resize to resize x resize, skewing the aspect ratio
    crop: int | None = None           # centre crop after the resize; null: keep the whole resized image
    interpolation: str = "bilinear"   # bilinear (torchvision's Resize default) | bicubic
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    def check(self) -> None:
        if self.resize < 1:
            raise ConfigError(f"preprocess.resize={self.resize}: must be a positive size")
        if self.crop is not None and not 1 <= self.crop <= self.resize:
            raise ConfigError(f"preprocess.crop={self.crop}: must be between 1 and preprocess.resize={self.resize}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"preprocess.interpolation={self.interpolation!r}: expected one of {', '.join(INTERPOLATIONS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"preprocess.mean/std: need three values each and std > 0 (got {self.mean}, {self.std})")

    @property
    def fixed_size(self) -> int | None:
        """The side of every output image when all have one shape (square or cropped), else None."""
        return self.crop or (self.resize if self.square else None)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ResizeCropTransform:
    """bytes -> uint8 CHW: shorter side (or both sides) to `resize`, then an optional centre crop."""

    resize: int
    square: bool
    crop: int | None
    interpolation: str

    @classmethod
    def from_config(cls, cfg: PreprocessConfig) -> "ResizeCropTransform":
        cfg.check()
        return cls(cfg.resize, cfg.square, cfg.crop, cfg.interpolation)

    def __call__(self, data: bytes) -> torch.Tensor:
        img = decode_rgb(data, min_side=self.resize)
        w, h = img.size
        if self.square:
            size = (self.resize, self.resize)
        elif w <= h:  # like torchvision's Resize(int): the longer side is truncated, not rounded
            size = (self.resize, int(self.resize * h / w))
        else:
            size = (int(self.resize * w / h), self.resize)
        img = img.resize(size, INTERPOLATIONS[self.interpolation])
        if self.crop is not None:
            left = int(round((img.width - self.crop) / 2.0))
            top = int(round((img.height - self.crop) / 2.0))
            img = img.crop((left, top, left + self.crop, top + self.crop))
        return to_uint8_chw(img)


def normalize_with(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float32 (x / 255 - mean) / std on the images' device."""
    m = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.to(torch.float32) / 255.0 - m) / s
