"""Content hashes (exact duplicates) and 64-bit DCT perceptual hashes (near duplicates).

`content_hash` is the SHA-256 of the source bytes as fetched: two downloads with the same hash are
the same file, whatever URL served them, and the hash does not depend on our resize settings.

`phash64`: grayscale, 32x32, 2-D DCT-II; the 64 lowest-frequency AC coefficients (zig-zag order,
DC left out because it only encodes mean brightness) are compared with their median, one bit
each, first coefficient in the most significant bit. Re-encoding, resizing and small brightness or
contrast changes move only a few bits; different photos differ in about half of them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from PIL import Image

_PHASH_SIDE = 32
_PHASH_BITS = 64


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=1)
def _dct_matrix(n: int = _PHASH_SIDE) -> np.ndarray:
    """Orthonormal DCT-II matrix C, so that C @ x @ C.T is the 2-D DCT of x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


@lru_cache(maxsize=1)
def _zigzag_ac_indices(count: int = _PHASH_BITS) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the first `count` coefficients after DC in JPEG zig-zag order."""
    cells = sorted(
        ((r, c) for r in range(_PHASH_SIDE) for c in range(_PHASH_SIDE)),
        key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else rc[1]),
    )
    chosen = cells[1 : count + 1]
    return np.array([r for r, _ in chosen]), np.array([c for _, c in chosen])


def phash64(image: Image.Image) -> int:
    # reducing_gap: box-reduce by an integer factor first, then LANCZOS the last 2x (10x faster, same hash bits)
    gray = image.convert("L").resize((_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    pixels = np.asarray(gray, dtype=np.float64)
    dct = _dct_matrix()
    coefficients = (dct @ pixels @ dct.T)[_zigzag_ac_indices()]
    bits = coefficients > np.median(coefficients)
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def to_signed64(value: int) -> int:
    """Store an unsigned 64-bit hash in an int64 column (Parquet/Arrow); inverse of to_unsigned64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value
