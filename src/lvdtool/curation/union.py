"""The union of what every seed set (and the balanced subset) selected, each pool image once.

A pool image selected by several sets is attributed to the first set in the order given (its
query and similarity come from that set); `n_sets` counts how many sets selected it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvdtool.curation.retrieval import SeedResult


@dataclass
class Union:
    pool_rows: np.ndarray  # int64 ascending
    source: np.ndarray  # int64 index into the list of sets
    query_rows: np.ndarray  # int64 (-1: no query)
    similarity: np.ndarray  # float32
    n_sets: np.ndarray  # int64

    @property
    def size(self) -> int:
        return int(len(self.pool_rows))


def union_of(results: list[SeedResult]) -> Union:
    if not results:
        e = np.zeros(0, np.int64)
        return Union(e, e, e, np.zeros(0, np.float32), e)
    pool = np.concatenate([r.pool_rows for r in results])
    source = np.concatenate([np.full(len(r.pool_rows), i, np.int64) for i, r in enumerate(results)])
    query = np.concatenate([r.query_rows for r in results])
    sim = np.concatenate([r.similarity for r in results])
    order = np.lexsort((source, pool))  # by pool row, then set order: the first set wins
    pool, source, query, sim = pool[order], source[order], query[order], sim[order]
    first = np.ones(len(pool), dtype=bool)
    first[1:] = pool[1:] != pool[:-1]
    starts = np.flatnonzero(first)
    n_sets = np.diff(np.append(starts, len(pool)))
    return Union(pool[first], source[first], query[first], sim[first], n_sets.astype(np.int64))


def union_stats(union: Union, names: list[str]) -> dict[str, int | dict[str, int]]:
    attributed = np.bincount(union.source, minlength=len(names)) if union.size else np.zeros(len(names), np.int64)
    return {
        "selected": union.size,
        "in_several_sets": int(np.sum(union.n_sets > 1)),
        "attributed": {name: int(attributed[i]) for i, name in enumerate(names)},
    }
