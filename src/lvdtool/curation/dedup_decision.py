"""What dedup does with every row: kept, removed as a near-duplicate, or removed as contaminated.

Pure array code over component labels, representatives and the components each benchmark
touches; no I/O, so it is tested on hand-made graphs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvdtool.index import knn_search
from lvdtool.index.backend import Backend
from lvdtool.index.vectors import VectorSource, gather_rows

KEPT, NEAR_DUPLICATE, FIRST_BENCHMARK = 0, 1, 2


@dataclass
class DedupDecision:
    labels: np.ndarray  # int64 component of each row
    representatives: np.ndarray  # int64 row kept (or, if contaminated, that would have been kept) per component
    component_benchmark: np.ndarray  # int64 per component: index of the benchmark it is removed for, or -1
    code: np.ndarray  # int64 per row: KEPT, NEAR_DUPLICATE or FIRST_BENCHMARK + benchmark index
    benchmarks: list[str]

    def reason_names(self) -> list[str]:
        return ["kept", "near_duplicate"] + [f"contaminated:{b}" for b in self.benchmarks]

    def reasons(self, rows: np.ndarray) -> list[str]:
        names = self.reason_names()
        return [names[c] for c in self.code[rows]]

    @property
    def kept_rows(self) -> np.ndarray:
        return np.flatnonzero(self.code == KEPT)

    @property
    def removed_rows(self) -> np.ndarray:
        return np.flatnonzero(self.code != KEPT)

    def removed_counts(self) -> dict[str, int]:
        names = self.reason_names()
        counts = np.bincount(self.code, minlength=len(names))
        return {names[i]: int(counts[i]) for i in range(1, len(names))}


def decide(
    labels: np.ndarray, representatives: np.ndarray, touched: list[tuple[str, np.ndarray]]
) -> DedupDecision:
    """`touched`: (benchmark, bool per component) in the order given; the first benchmark claims a component."""
    labels = np.asarray(labels, dtype=np.int64)
    num_components = len(representatives)
    owner = np.full(num_components, -1, dtype=np.int64)
    for index, (_, hit) in enumerate(touched):
        owner[(owner < 0) & hit[:num_components]] = index
    is_rep = np.zeros(len(labels), dtype=bool)
    is_rep[representatives[representatives >= 0]] = True
    row_owner = owner[labels] if labels.size else np.zeros(0, np.int64)
    code = np.where(row_owner >= 0, FIRST_BENCHMARK + row_owner, np.where(is_rep, KEPT, NEAR_DUPLICATE))
    return DedupDecision(labels=labels, representatives=np.asarray(representatives, np.int64),
                         component_benchmark=owner, code=code.astype(np.int64), benchmarks=[n for n, _ in touched])


def graph_stats(decision: DedupDecision, pairs_above: int) -> dict[str, int]:
    sizes = np.bincount(decision.labels) if decision.labels.size else np.zeros(0, np.int64)
    return {
        "images": int(len(decision.labels)),
        "pairs": int(pairs_above),
        "components": int(len(sizes)),
        "duplicate_components": int(np.sum(sizes > 1)),
        "largest_component": int(sizes.max()) if sizes.size else 0,
        "kept": int(np.sum(decision.code == KEPT)),
    }


def rowwise_similarity(source: VectorSource, rows: np.ndarray, others: np.ndarray, chunk_rows: int) -> np.ndarray:
    """Cosine of rows[i] with others[i] (unit vectors), read in one pass per side."""
    if not len(rows):
        return np.zeros(0, np.float32)
    a = gather_rows(source, np.asarray(rows, np.int64), chunk_rows)
    b = gather_rows(source, np.asarray(others, np.int64), chunk_rows)
    return np.einsum("ij,ij->i", a, b).astype(np.float32)


def nearest_eval(
    source: VectorSource, rows: np.ndarray, eval_vectors: VectorSource, backend: Backend, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, eval row) of the nearest eval image of each pool row in `rows`."""
    if not len(rows):
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    queries = gather_rows(source, np.asarray(rows, np.int64), chunk_rows)
    sims, ids = knn_search(queries, eval_vectors, 1, metric="ip", chunk_rows=chunk_rows, backend=backend)
    return sims[:, 0].astype(np.float32), ids[:, 0].astype(np.int64)


def removed_similarities(
    decision: DedupDecision, source: VectorSource, eval_sets: list[VectorSource], backend: Backend, chunk_rows: int
) -> dict[str, np.ndarray]:
    """For every removed row: cosine to its representative (near_duplicate) or to the nearest image of
    the benchmark it is removed for (then also that image's row)."""
    rows = decision.removed_rows
    sim = np.zeros(len(rows), np.float32)
    eval_row = np.full(len(rows), -1, np.int64)
    codes = decision.code[rows]
    near = codes == NEAR_DUPLICATE
    reps = decision.representatives[decision.labels[rows[near]]]
    sim[near] = rowwise_similarity(source, rows[near], reps, chunk_rows)
    for i, eval_vectors in enumerate(eval_sets):
        mine = codes == FIRST_BENCHMARK + i
        sim[mine], eval_row[mine] = nearest_eval(source, rows[mine], eval_vectors, backend, chunk_rows)
    return {"rows": rows, "similarity": sim, "eval_row": eval_row}


def benchmark_stats(decision: DedupDecision, eval_pairs: list, eval_sizes: list[int], threshold: float) -> dict[str, dict[str, int]]:
    """Per benchmark: eval images, matches above the threshold, pool images and components they touch
    (overlaps between benchmarks included), and images removed on its account."""
    out = {}
    for i, (name, found, size) in enumerate(zip(decision.benchmarks, eval_pairs, eval_sizes)):
        hits = found.above(threshold)
        comps = np.unique(decision.labels[hits.b]) if len(hits) else np.zeros(0, np.int64)
        out[name] = {
            "eval_images": int(size),
            "matched_pairs": len(hits),
            "matched_pool_images": int(len(np.unique(hits.b))),
            "components": int(len(comps)),
            "images_in_components": int(np.isin(decision.labels, comps).sum()),
            "removed": int(np.sum(decision.code == FIRST_BENCHMARK + i)),
        }
    return out
