"""A `VectorSource` over chosen rows of another source: the pool restricted to a selection, a query block.

Rows are read in one streaming pass (each source chunk once, stopping after the last chosen row)
and re-chunked, so an out-of-core embeddings artifact stays out of core.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from lvdtool.errors import InputError
from lvdtool.index.vectors import VectorSource

READ_CHUNK_ROWS = 1 << 16


class RowSubset:
    """Rows `rows` (strictly increasing) of `source`, renumbered 0..len(rows)-1."""

    def __init__(self, source: VectorSource, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= source.num_vectors or np.any(np.diff(rows) <= 0)):
            raise InputError(f"rows: expected increasing row numbers below {source.num_vectors}")
        self.source = source
        self.rows = rows

    @classmethod
    def range(cls, source: VectorSource, start: int, stop: int) -> "RowSubset":
        return cls(source, np.arange(start, min(stop, source.num_vectors), dtype=np.int64))

    @property
    def num_vectors(self) -> int:
        return int(len(self.rows))

    @property
    def dim(self) -> int:
        return int(self.source.dim)

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        if not self.rows.size:
            return
        pending: list[np.ndarray] = []
        held = emitted = 0
        last = int(self.rows[-1])
        for start, block in self.source.iter_chunks(max(chunk_rows, READ_CHUNK_ROWS)):
            lo, hi = np.searchsorted(self.rows, [start, start + len(block)])
            if hi > lo:
                pending.append(block[self.rows[lo:hi] - start])
                held += hi - lo
            while held >= chunk_rows:
                merged = np.concatenate(pending)
                yield emitted, np.ascontiguousarray(merged[:chunk_rows], dtype=np.float32)
                emitted += chunk_rows
                pending, held = [merged[chunk_rows:]], held - chunk_rows
            if start + len(block) > last:
                break  # nothing wanted further on: do not read the rest of the artifact
        if held:
            yield emitted, np.ascontiguousarray(np.concatenate(pending), dtype=np.float32)
