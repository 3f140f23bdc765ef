"""Vector inputs: the `VectorSource` protocol and its in-memory implementation.

Every index function takes either a numpy array or a `VectorSource`, so the same code
runs on a matrix in RAM and on an embeddings artifact larger than RAM (which only has
to yield row chunks in order).
"""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

import numpy as np

from lvdtool.errors import InputError

DEFAULT_CHUNK_ROWS = 32768


@runtime_checkable
class VectorSource(Protocol):
    """Rows of a [num_vectors, dim] matrix, read in order, one chunk at a time."""

    @property
    def num_vectors(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start_row, float32 array [rows <= chunk_rows, dim]) covering all rows in order."""
        ...


class ArrayVectors:
    """A `VectorSource` over a numpy array (float16 or float32) already in memory."""

    def __init__(self, array: np.ndarray, name: str = "vectors") -> None:
        if not isinstance(array, np.ndarray) or array.ndim != 2:
            raise InputError(f"{name}: expected a 2-D numpy array, got {type(array).__name__}")
        if array.dtype not in (np.float16, np.float32, np.float64):
            raise InputError(f"{name}: expected float16/float32 vectors, got dtype {array.dtype}")
        self.array = array

    @property
    def num_vectors(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.num_vectors, chunk_rows):
            block = self.array[start : start + chunk_rows]
            yield start, np.ascontiguousarray(block, dtype=np.float32)

    def iter_row_range(self, start: int, stop: int, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for at in range(start, stop, chunk_rows):
            yield at, np.ascontiguousarray(self.array[at : min(at + chunk_rows, stop)], dtype=np.float32)


def as_source(vectors: np.ndarray | VectorSource, name: str = "vectors") -> VectorSource:
    """Wrap an array as `ArrayVectors`; pass a `VectorSource` through."""
    if isinstance(vectors, np.ndarray):
        return ArrayVectors(vectors, name=name)
    if isinstance(vectors, VectorSource):
        return vectors
    raise InputError(f"{name}: expected a numpy array or a VectorSource, got {type(vectors).__name__}")


def check_chunk_rows(chunk_rows: int, name: str = "chunk_rows") -> int:
    if int(chunk_rows) < 1:
        raise InputError(f"{name}: must be a positive number of rows, got {chunk_rows}")
    return int(chunk_rows)


def check_same_dim(a: VectorSource, b: VectorSource, a_name: str, b_name: str) -> None:
    if a.dim != b.dim:
        raise InputError(f"{b_name}: dimension {b.dim} differs from {a_name} dimension {a.dim}")


def to_memory(source: VectorSource, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """All rows as one float32 array (only for sources known to fit in RAM)."""
    if isinstance(source, ArrayVectors):
        return np.ascontiguousarray(source.array, dtype=np.float32)
    out = np.empty((source.num_vectors, source.dim), dtype=np.float32)
    for start, block in source.iter_chunks(chunk_rows):
        out[start : start + len(block)] = block
    return out


def iter_row_range(source: VectorSource, start: int, stop: int, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start_row, float32 block) over rows [start, stop) only, chunk_rows rows per block counted from
    `start`. Sources with their own `iter_row_range` (arrays, embeddings artifacts) read just those
    rows; any other source is read from the front and the rows before `start` are skipped."""
    start, stop = max(0, int(start)), min(int(stop), source.num_vectors)
    if stop <= start:
        return
    own = getattr(source, "iter_row_range", None)
    if own is not None:
        yield from own(start, stop, chunk_rows)
        return
    pending: list[np.ndarray] = []
    held, emitted = 0, start
    for at, block in source.iter_chunks(chunk_rows):
        lo, hi = max(start, at), min(stop, at + len(block))
        if hi > lo:
            pending.append(block[lo - at : hi - at])
            held += hi - lo
        while held >= chunk_rows or (held and at + len(block) >= stop):
            merged = np.concatenate(pending)
            take = min(chunk_rows, held)
            yield emitted, np.ascontiguousarray(merged[:take], dtype=np.float32)
            emitted, held, pending = emitted + take, held - take, [merged[take:]]
        if at + len(block) >= stop:
            return


def gather_rows(source: VectorSource, rows: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """Rows `rows` (any order, repeats allowed) as float32 [len(rows), dim], in one streaming pass."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= source.num_vectors):
        raise InputError(f"rows: index out of range for {source.num_vectors} vectors")
    if isinstance(source, ArrayVectors):
        return np.ascontiguousarray(source.array[rows], dtype=np.float32)
    out = np.empty((len(rows), source.dim), dtype=np.float32)
    if not rows.size:
        return out
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    for start, block in source.iter_chunks(chunk_rows):
        lo, hi = np.searchsorted(sorted_rows, [start, start + len(block)])
        if hi > lo:
            out[order[lo:hi]] = block[sorted_rows[lo:hi] - start]
    return out


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)
