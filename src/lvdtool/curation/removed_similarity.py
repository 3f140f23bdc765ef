"""The similarity of every removed row to what it was removed for, in bounded memory.

near_duplicate rows: cosine to their component's representative. Two streaming passes over the
pool: the first writes the representatives' vectors to a float32 scratch array on disk (under
`_work/`), the second scores each chunk's removed rows against them. contaminated rows: the
nearest image of their benchmark, searched one block of removed rows at a time. RAM holds one
chunk, never a gather of all removed rows (0.3-0.8 TiB at 1.2B images).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lvdtool.curation.dedup_decision import FIRST_BENCHMARK, NEAR_DUPLICATE, DedupDecision
from lvdtool.curation.row_subset import RowSubset
from lvdtool.index import knn_search
from lvdtool.index.backend import Backend
from lvdtool.index.vectors import VectorSource


def _rep_vectors(source: VectorSource, reps: np.ndarray, chunk_rows: int, scratch: Path) -> np.ndarray:
    """Rows `reps` (sorted, unique) of `source` as a float32 memmap at `scratch`, in one pass."""
    store = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32, shape=(max(len(reps), 1), source.dim))
    for at, block in RowSubset(source, reps).iter_chunks(chunk_rows):
        store[at:at + len(block)] = block
    store.flush()
    return store


def near_duplicate_similarity(source: VectorSource, rows: np.ndarray, reps: np.ndarray, chunk_rows: int,
                              scratch: Path) -> np.ndarray:
    """Cosine of rows[i] (sorted) with reps[i] (unit vectors): two streaming passes, one chunk in RAM."""
    sim = np.zeros(len(rows), np.float32)
    if not len(rows):
        return sim
    unique_reps = np.unique(reps)
    store = _rep_vectors(source, unique_reps, chunk_rows, scratch)
    try:
        slot = np.searchsorted(unique_reps, reps)
        for at, block in RowSubset(source, rows).iter_chunks(chunk_rows):
            others = np.asarray(store[slot[at:at + len(block)]])
            sim[at:at + len(block)] = np.einsum("ij,ij->i", block, others).astype(np.float32)
    finally:
        del store
        scratch.unlink(missing_ok=True)
    return sim


def nearest_eval(source: VectorSource, rows: np.ndarray, eval_vectors: VectorSource, backend: Backend,
                 chunk_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, eval row) of the nearest eval image of each pool row in `rows` (sorted), block by block."""
    sims = np.zeros(len(rows), np.float32)
    ids = np.full(len(rows), -1, np.int64)
    for at, block in RowSubset(source, rows).iter_chunks(chunk_rows):
        s, i = knn_search(block, eval_vectors, 1, metric="ip", chunk_rows=chunk_rows, backend=backend)
        sims[at:at + len(block)], ids[at:at + len(block)] = s[:, 0], i[:, 0]
    return sims, ids


def removed_similarities(decision: DedupDecision, source: VectorSource, eval_sets: list[VectorSource], backend: Backend,
                         chunk_rows: int, scratch: Path) -> dict[str, np.ndarray]:
    """For every removed row: cosine to its representative (near_duplicate) or to the nearest image of
    the benchmark it is removed for (then also that image's row)."""
    rows, codes = decision.removed, decision.removed_code
    sim = np.zeros(len(rows), np.float32)
    eval_row = np.full(len(rows), -1, np.int64)
    near = codes == NEAR_DUPLICATE
    sim[near] = near_duplicate_similarity(source, rows[near], decision.representative_of(rows[near]), chunk_rows, scratch)
    for i, eval_vectors in enumerate(eval_sets):
        mine = codes == FIRST_BENCHMARK + i
        sim[mine], eval_row[mine] = nearest_eval(source, rows[mine], eval_vectors, backend, chunk_rows)
    return {"rows": rows, "similarity": sim, "eval_row": eval_row}
