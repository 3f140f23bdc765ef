"""The result of a range search, in faiss's layout (lims, sims, ids)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RangeResult:
    """Neighbours of query q are `ids[lims[q]:lims[q+1]]` (ascending id) with `sims` alongside."""

    lims: np.ndarray  # int64 [num_queries + 1]
    sims: np.ndarray  # float32 [num_results]
    ids: np.ndarray  # int64 [num_results]

    @property
    def num_queries(self) -> int:
        return len(self.lims) - 1

    def query_rows(self) -> np.ndarray:
        """The query row of every result (int64 [num_results])."""
        return np.repeat(np.arange(self.num_queries, dtype=np.int64), np.diff(self.lims))

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query rows, database ids, sims) as three flat arrays."""
        return self.query_rows(), self.ids, self.sims

    @classmethod
    def from_triples(cls, num_queries: int, rows: np.ndarray, ids: np.ndarray, sims: np.ndarray) -> "RangeResult":
        """Build from unordered (query row, id, sim) triples: sorted by query row then id."""
        order = np.lexsort((ids, rows))
        counts = np.bincount(rows, minlength=num_queries) if rows.size else np.zeros(num_queries, np.int64)
        lims = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(lims=lims, sims=sims[order].astype(np.float32), ids=ids[order].astype(np.int64))


def concat_or_empty(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    """Concatenate result pieces (an empty array of `dtype` when there are none)."""
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)
