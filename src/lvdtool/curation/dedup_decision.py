"""What dedup does with every row: kept, removed as a near-duplicate, or removed as contaminated.

Held sparsely: only removed rows are listed (sorted int64 rows + an int8 reason code), and
representatives only for components with more than one row; every other row is kept. A shard's
kept rows are its row range minus the removed rows in it (two `searchsorted`), so writing all
shards costs O(N + removed), never O(N x shards). Pure array code, tested on hand-made graphs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvdtool.curation.sparse_components import SparseComponents
from lvdtool.errors import ConfigError

KEPT, NEAR_DUPLICATE, FIRST_BENCHMARK = 0, 1, 2
MAX_BENCHMARKS = 120  # reason codes are int8


@dataclass
class DedupDecision:
    components: SparseComponents
    rep_roots: np.ndarray  # int64 sorted: roots of the components with more than one row
    rep_rows: np.ndarray  # int64: the representative row of each (kept, unless the component is contaminated)
    removed: np.ndarray  # int64 sorted: every removed row
    removed_code: np.ndarray  # int8 per removed row: NEAR_DUPLICATE or FIRST_BENCHMARK + benchmark index
    benchmarks: list[str]

    @property
    def num_rows(self) -> int:
        return self.components.num_rows

    @property
    def num_kept(self) -> int:
        return self.num_rows - len(self.removed)

    def reason_names(self) -> list[str]:
        return ["kept", "near_duplicate"] + [f"contaminated:{b}" for b in self.benchmarks]

    def reasons(self, codes: np.ndarray) -> list[str]:
        names = self.reason_names()
        return [names[c] for c in np.asarray(codes).tolist()]

    def codes_of(self, rows: np.ndarray) -> np.ndarray:
        """Reason code (int8) of each of `rows`."""
        rows = np.asarray(rows, np.int64)
        pos = np.minimum(np.searchsorted(self.removed, rows), max(len(self.removed) - 1, 0))
        if not len(self.removed):
            return np.zeros(len(rows), np.int8)
        return np.where(self.removed[pos] == rows, self.removed_code[pos], KEPT).astype(np.int8)

    def kept_in(self, start: int, stop: int) -> np.ndarray:
        """Kept rows in [start, stop), ascending: O(stop - start + log removed)."""
        lo, hi = np.searchsorted(self.removed, [start, stop])
        keep = np.ones(stop - start, dtype=bool)
        keep[self.removed[lo:hi] - start] = False
        return np.flatnonzero(keep).astype(np.int64) + start

    def representative_of(self, rows: np.ndarray) -> np.ndarray:
        """The representative row of the component of each of `rows` (a row alone is its own)."""
        roots = self.components.roots_of(rows)
        if not len(self.rep_roots):
            return roots
        pos = np.minimum(np.searchsorted(self.rep_roots, roots), len(self.rep_roots) - 1)
        return np.where(self.rep_roots[pos] == roots, self.rep_rows[pos], roots)

    def removed_counts(self) -> dict[str, int]:
        names = self.reason_names()
        counts = np.bincount(self.removed_code.astype(np.int64), minlength=len(names))
        return {names[i]: int(counts[i]) for i in range(1, len(names))}


def decide(components: SparseComponents, rep_rows: np.ndarray, touched: list[tuple[str, np.ndarray]]) -> DedupDecision:
    """`rep_rows`: the representative of each duplicate component, in the order of `duplicate_roots()`.
    `touched`: (benchmark, pool rows it matched) in the order given; the first benchmark claims a component."""
    if len(touched) > MAX_BENCHMARKS:
        raise ConfigError(f"against: at most {MAX_BENCHMARKS} benchmarks, got {len(touched)}")
    rep_roots, _ = components.duplicate_roots()
    rep_rows = np.asarray(rep_rows, np.int64)
    nodes = components.nodes
    node_rep = rep_rows[np.searchsorted(rep_roots, components.root)] if len(nodes) else np.zeros(0, np.int64)
    near = nodes[nodes != node_rep]

    hit_roots = [components.roots_of(np.asarray(rows, np.int64)) for _, rows in touched]
    roots = np.concatenate(hit_roots) if hit_roots else np.zeros(0, np.int64)
    owner = np.concatenate([np.full(len(r), i, np.int64) for i, r in enumerate(hit_roots)]) if hit_roots else roots
    order = np.lexsort((owner, roots))  # by root, then benchmark order: the first benchmark wins
    roots, owner = roots[order], owner[order]
    first = np.ones(len(roots), dtype=bool)
    first[1:] = roots[1:] != roots[:-1]
    bad_roots, bad_owner = roots[first], owner[first]

    in_bad = np.zeros(len(nodes), dtype=bool)
    node_owner = np.zeros(len(nodes), dtype=np.int64)
    if len(bad_roots) and len(nodes):
        pos = np.minimum(np.searchsorted(bad_roots, components.root), len(bad_roots) - 1)
        in_bad = bad_roots[pos] == components.root
        node_owner = bad_owner[pos]
    alone = ~np.isin(bad_roots, nodes)  # contaminated rows without an edge
    bad_rows = np.concatenate([nodes[in_bad], bad_roots[alone]])
    bad_code = np.concatenate([node_owner[in_bad], bad_owner[alone]]) + FIRST_BENCHMARK

    rows = np.concatenate([near, bad_rows])
    codes = np.concatenate([np.full(len(near), NEAR_DUPLICATE, np.int64), bad_code])
    order = np.lexsort((-codes, rows))  # contamination overrides near_duplicate
    rows, codes = rows[order], codes[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    return DedupDecision(components=components, rep_roots=rep_roots, rep_rows=rep_rows, removed=rows[first],
                         removed_code=codes[first].astype(np.int8), benchmarks=[n for n, _ in touched])


def graph_stats(decision: DedupDecision, pairs_above: int) -> dict[str, int]:
    comps = decision.components
    _, sizes = comps.duplicate_roots()
    return {
        "images": int(decision.num_rows),
        "pairs": int(pairs_above),
        "components": int(comps.num_components),
        "duplicate_components": int(len(sizes)),
        "largest_component": int(sizes.max()) if len(sizes) else int(decision.num_rows > 0),
        "kept": int(decision.num_kept),
    }


def benchmark_stats(decision: DedupDecision, eval_pairs: list, eval_sizes: list[int], threshold: float) -> dict[str, dict[str, int]]:
    """Per benchmark: eval images, matches above the threshold, pool images and components they touch
    (overlaps between benchmarks included), and images removed on its account."""
    out = {}
    for i, (name, found, size) in enumerate(zip(decision.benchmarks, eval_pairs, eval_sizes)):
        hits = found.above(threshold)
        comps = np.unique(decision.components.roots_of(hits.b)) if len(hits) else np.zeros(0, np.int64)
        out[name] = {
            "eval_images": int(size),
            "matched_pairs": len(hits),
            "matched_pool_images": int(len(np.unique(hits.b))),
            "components": int(len(comps)),
            "images_in_components": int(decision.components.sizes_of(comps).sum()),
            "removed": int(np.sum(decision.removed_code == FIRST_BENCHMARK + i)),
        }
    return out
