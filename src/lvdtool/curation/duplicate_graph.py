"""The near-duplicate graph of a set: k-NN of every row, edges above a cosine threshold, components.

The k-NN runs over query blocks of `block_rows` rows; each block's neighbour lists are cut at
`keep_above` (the threshold minus the calibration band, so the pairs just below the threshold
stay visible) and stored under `_work/` before the next block starts: a killed run resumes at
the first missing block, and memory holds one block's k-NN result, not N x k.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lvdtool.curation.row_subset import RowSubset
from lvdtool.curation.search import PoolSearcher
from lvdtool.curation.sparse_components import SparseComponents
from lvdtool.curation.work_state import WorkState
from lvdtool.errors import ArtifactError
from lvdtool.index import connected_components


@dataclass
class Pairs:
    """Similarity pairs (a, b, sim); for the self graph a < b and each pair appears once."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    sim: np.ndarray  # float32

    @classmethod
    def empty(cls) -> "Pairs":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    @classmethod
    def concat(cls, parts: list["Pairs"]) -> "Pairs":
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.a for p in parts]), np.concatenate([p.b for p in parts]),
                   np.concatenate([p.sim for p in parts]))

    def above(self, threshold: float) -> "Pairs":
        keep = self.sim > threshold
        return Pairs(self.a[keep], self.b[keep], self.sim[keep])

    def __len__(self) -> int:
        return int(len(self.a))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"a": self.a, "b": self.b, "sim": self.sim}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Pairs":
        return cls(arrays["a"].astype(np.int64), arrays["b"].astype(np.int64), arrays["sim"].astype(np.float32))


def pairs_from_knn(sims: np.ndarray, ids: np.ndarray, row_offset: int, keep_above: float) -> Pairs:
    """Neighbour lists of query rows row_offset.. -> pairs above `keep_above`, self matches dropped."""
    rows = np.broadcast_to(np.arange(row_offset, row_offset + len(ids), dtype=np.int64)[:, None], ids.shape)
    keep = (sims > keep_above) & (ids >= 0) & (ids != rows)
    return Pairs(rows[keep].astype(np.int64), ids[keep].astype(np.int64), sims[keep].astype(np.float32))


def unique_undirected(pairs: Pairs) -> Pairs:
    """Each undirected pair once, as (min, max), keeping its highest similarity (engines may differ in the
    last bit between i->j and j->i)."""
    if not len(pairs):
        return pairs
    lo, hi = np.minimum(pairs.a, pairs.b), np.maximum(pairs.a, pairs.b)
    order = np.lexsort((-pairs.sim, hi, lo))
    lo, hi, sim = lo[order], hi[order], pairs.sim[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return Pairs(lo[first], hi[first], sim[first])


def block_name(block: int) -> str:
    return f"knn-{block:06d}"


def neighbour_blocks(num_rows: int, block_rows: int) -> list[tuple[int, int]]:
    """(start, stop) of each query block: the restart unit of the graph, and the unit ranks share."""
    return [(start, min(start + block_rows, num_rows)) for start in range(0, num_rows, block_rows)]


def compute_neighbour_blocks(
    searcher: PoolSearcher,
    k: int,
    keep_above: float,
    block_rows: int,
    work: WorkState,
    owns: Callable[[int], bool] = lambda block: True,
    on_block: Callable[[int], None] | None = None,
) -> None:
    """Search the query blocks this rank owns (block i -> rank i mod W) that no earlier run stored."""
    source = searcher.database
    n = source.num_vectors
    k_eff = min(int(k), max(n - 1, 1))
    for block, (start, stop) in enumerate(neighbour_blocks(n, block_rows)):
        if not owns(block):
            continue

        def compute(start=start, stop=stop) -> tuple[dict[str, np.ndarray], dict]:
            queries = RowSubset.range(source, start, stop)
            sims, ids = searcher.search(queries, k_eff + 1)  # +1: the row finds itself
            return pairs_from_knn(sims, ids, start, keep_above).arrays(), {"rows": queries.num_vectors}

        work.cached(block_name(block), compute)
        if on_block is not None:
            on_block(stop - start)


def load_neighbour_pairs(num_rows: int, block_rows: int, work: WorkState) -> Pairs:
    """Every block's pairs (all blocks must be stored), each undirected pair once."""
    parts = []
    for block, _ in enumerate(neighbour_blocks(num_rows, block_rows)):
        stored = work.load(block_name(block))
        if stored is None:
            raise ArtifactError(f"{work.path(block_name(block))}: k-NN block {block} is missing or unreadable")
        parts.append(Pairs.from_arrays(stored[0]))
    return unique_undirected(Pairs.concat(parts))


def self_neighbour_pairs(
    searcher: PoolSearcher,
    k: int,
    keep_above: float,
    block_rows: int,
    work: WorkState,
    on_block: Callable[[int], None] | None = None,
) -> Pairs:
    """All pairs of rows among each other's k nearest neighbours with similarity above `keep_above`."""
    compute_neighbour_blocks(searcher, k, keep_above, block_rows, work, on_block=on_block)
    return load_neighbour_pairs(searcher.database.num_vectors, block_rows, work)


def duplicate_components(num_rows: int, pairs: Pairs, threshold: float) -> np.ndarray:
    """Component label of every row in the graph of pairs strictly above `threshold` (canonical labels)."""
    edges = pairs.above(threshold)
    return connected_components(num_rows, edges.a, edges.b)


def sparse_duplicate_components(num_rows: int, pairs: Pairs, threshold: float) -> SparseComponents:
    """The same components held per graph node (O(pairs) memory, see `sparse_components`)."""
    edges = pairs.above(threshold)
    return SparseComponents.from_edges(num_rows, edges.a, edges.b)
