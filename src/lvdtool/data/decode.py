"""Decode stored image bytes to RGB, fast: JPEG DCT-domain downscaling with `Image.draft`."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def decode_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode to RGB; with `min_side`, let libjpeg decode at the smallest scale whose shorter side
    still covers min_side (about 6x faster than a full decode plus resize for large JPEGs)."""
    img = Image.open(io.BytesIO(data))
    if min_side is not None and img.format == "JPEG":
        w, h = img.size
        scale = min(w, h) / min_side
        if scale >= 2:
            img.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
    return img.convert("RGB")


def to_uint8_chw(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
