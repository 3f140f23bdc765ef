"""The linear-probe training augmentation: random-resized crop (scale 0.08-1) + horizontal flip."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lvdtool.data.augment.geometry import crop_resize, hflip, sample_crop_box
from lvdtool.data.decode import decode_rgb, to_uint8_chw


@dataclass
class RandomResizedCropFlip:
    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    seed: int = 0

    def __post_init__(self) -> None:
        self._generator: torch.Generator | None = None

    def __call__(self, data: bytes) -> torch.Tensor:
        if self._generator is None:  # lazily, per DataLoader worker
            info = torch.utils.data.get_worker_info()
            self._generator = torch.Generator().manual_seed(self.seed * 1000 + (info.id if info else 0))
        image = to_uint8_chw(decode_rgb(data, min_side=self.size))
        box = sample_crop_box((image.shape[1], image.shape[2]), self.scale, self._generator)
        crop = crop_resize(image, box, self.size)
        if torch.rand((), generator=self._generator) < 0.5:
            crop = hflip(crop)
        return (crop * 255).round_().to(torch.uint8)
