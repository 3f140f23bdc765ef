"""The evaluation transform: resize the shorter side (bicubic) then center-crop, as uint8 CHW.

Normalisation happens on the device, batched (see `normalize_batch`), so workers ship 4x fewer bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from lvdtool.data.decode import decode_rgb, to_uint8_chw

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EvalTransform:
    crop: int = 224
    resize: int | None = None  # shorter side before the crop; default crop * 256 / 224

    @property
    def resize_to(self) -> int:
        return self.resize or round(self.crop * 256 / 224)

    def __call__(self, data: bytes) -> torch.Tensor:
        img = decode_rgb(data, min_side=self.resize_to)
        w, h = img.size
        s = self.resize_to / min(w, h)
        img = img.resize((max(self.crop, round(w * s)), max(self.crop, round(h * s))), Image.Resampling.BICUBIC)
        left, top = (img.width - self.crop) // 2, (img.height - self.crop) // 2
        return to_uint8_chw(img.crop((left, top, left + self.crop, top + self.crop)))


def normalize_batch(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B,3,H,W] -> normalised float on the same device."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return (images.to(dtype) - mean) / std
