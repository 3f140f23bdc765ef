"""Shared test data for the index package: unit vectors with planted clusters."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pytest


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class StreamOnlyVectors:
    """A VectorSource that can only be read front to back in chunks (like a shard reader),
    so the streaming code paths are exercised instead of the in-memory shortcuts."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.passes = 0

    @property
    def num_vectors(self) -> int:
        return len(self._array)

    @property
    def dim(self) -> int:
        return self._array.shape[1]

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        self.passes += 1
        for start in range(0, len(self._array), chunk_rows):
            yield start, self._array[start : start + chunk_rows].astype(np.float32)


@pytest.fixture
def planted() -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """planted(sizes, dim, noise, seed) -> (unit vectors float32, true labels, unit centres)."""

    def make(sizes, dim: int = 16, noise: float = 0.05, seed: int = 0):
        rng = np.random.default_rng(seed)
        centres = unit_rows(rng.standard_normal((len(sizes), dim)))
        labels = np.repeat(np.arange(len(sizes)), sizes)
        rng.shuffle(labels)
        x = unit_rows(centres[labels] + noise * rng.standard_normal((len(labels), dim)))
        return x, labels, centres

    return make


@pytest.fixture
def stream_only() -> type:
    return StreamOnlyVectors
