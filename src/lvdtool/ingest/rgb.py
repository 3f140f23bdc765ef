"""Bring any decoded Pillow image to upright 8-bit RGB.

Rules, chosen for what a vision model should see:
- transparency (alpha bands, palette or colour-key transparency) is composited onto white, the
  background a browser shows, not black (Pillow's plain convert("RGB") drops alpha, which turns
  transparent pixels into whatever colour they happen to store, often black);
- 16-bit integer images are scaled 0..65535 -> 0..255 (Pillow's convert clips at 255, which turns
  most of a 16-bit photo white); mode "I" is treated as 16-bit data, its usual origin;
- float images already in [0, 1] are scaled by 255, other ranges are stretched min..max;
- CMYK goes through Pillow's conversion (Adobe-inverted JPEG CMYK is undone by the JPEG decoder).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
ORIENTATION_TAG = 0x0112
# EXIF orientation value -> the transpose that makes the image upright.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
WHITE = (255, 255, 255)


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation 1..8 (1 when absent or unreadable: broken EXIF must not lose the image)."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # Pillow raises several types on malformed EXIF blocks
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orientation_swaps_axes(orientation: int) -> bool:
    return orientation in (5, 6, 7, 8)


def apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def has_transparency(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB image with the same pixels as `image` would show on a white page."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode == "F":
        return _float_to_rgb(image)
    if has_transparency(image):
        return _composite_on_white(image.convert("RGBA"))
    return image.convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    # Round-to-nearest of v * 255 / 65535, exact in integers.
    eight_bit = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(eight_bit).convert("RGB")


def _float_to_rgb(image: Image.Image) -> Image.Image:
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if not (low >= 0.0 and high <= 1.0):
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return Image.fromarray(np.rint(values * 255.0).astype(np.uint8)).convert("RGB")


def _composite_on_white(rgba: Image.Image) -> Image.Image:
    low_alpha, _ = rgba.getchannel("A").getextrema()
    if low_alpha == 255:
        return rgba.convert("RGB")  # fully opaque: skip the blend
    background = Image.new("RGB", rgba.size, WHITE)
    background.paste(rgba, (0, 0), rgba)
    return background
