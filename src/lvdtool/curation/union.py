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
    source: np.ndarray  # int16 index into the list of sets
    query_rows: np.ndarray  # int64 (-1: no query)
    similarity: np.ndarray  # float32
    n_sets: np.ndarray  # int16

    @property
    def size(self) -> int:
        return int(len(self.pool_rows))


def union_of(results: list[SeedResult]) -> Union:
    """Memory: 24 bytes per selected entry at peak (pool rows, their sort order, the sorted copy),
    then 24 per union row (no per-row Python objects)."""
    if not results:
        e = np.zeros(0, np.int64)
        return Union(e, np.zeros(0, np.int16), e, np.zeros(0, np.float32), np.zeros(0, np.int16))
    if len(results) > np.iinfo(np.int16).max:
        raise ValueError(f"union: at most {np.iinfo(np.int16).max} sets, got {len(results)}")
    pool = np.concatenate([r.pool_rows for r in results]).astype(np.int64, copy=False)
    # equal pool rows keep their set order (a stable sort of sets concatenated in order): the first set wins
    order = np.argsort(pool, kind="stable")
    pool = pool[order]
    first = np.ones(len(pool), dtype=bool)
    first[1:] = pool[1:] != pool[:-1]
    starts = np.flatnonzero(first)
    del first
    n_sets = np.diff(np.append(starts, len(pool))).astype(np.int16)
    pool = pool[starts]
    pick = order[starts]
    del order, starts
    ends = np.cumsum([len(r.pool_rows) for r in results])
    source = np.searchsorted(ends, pick, side="right").astype(np.int16)
    query = np.empty(len(pick), np.int64)
    sim = np.empty(len(pick), np.float32)
    for i, r in enumerate(results):
        mine = source == i
        local = pick[mine] - (ends[i] - len(r.pool_rows))
        query[mine] = r.query_rows[local]
        sim[mine] = r.similarity[local]
    return Union(pool, source, query, sim, n_sets)


def union_stats(union: Union, names: list[str]) -> dict[str, int | dict[str, int]]:
    attributed = np.bincount(union.source, minlength=len(names)) if union.size else np.zeros(len(names), np.int64)
    return {
        "selected": union.size,
        "in_several_sets": int(np.sum(union.n_sets > 1)),
        "attributed": {name: int(attributed[i]) for i, name in enumerate(names)},
    }
