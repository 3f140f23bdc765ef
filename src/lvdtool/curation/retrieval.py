"""DINOv2 retrieval from one seed set, both ways; results are pool rows with their provenance.

- sample mode (large seed sets): the k nearest pool images of every seed image. One pool image
  retrieved by several seed images is a collision; it is kept once, with its most similar query.
- cluster mode (small seed sets): seed images are assigned to the pool's k-means clusters; from
  every cluster linked to more than `min_seed_images` seed images, `per_cluster` pool images are
  sampled at random.
Either way at most `cap` images per set: sample mode keeps the most similar, cluster mode lowers
the per-cluster share evenly (water-filling) so no linked cluster is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lvdtool.curation.search import PoolSearcher
from lvdtool.index import take_per_cluster, waterfill
from lvdtool.index.vectors import VectorSource


@dataclass
class SeedResult:
    """Pool images one seed set selected, each pool row once."""

    pool_rows: np.ndarray  # int64, ascending
    query_rows: np.ndarray  # int64 seed row that retrieved it (sample mode), -1 in cluster mode
    similarity: np.ndarray  # float32: cosine to that seed image (sample) or to the cluster centroid (cluster)
    stats: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"pool_rows": self.pool_rows, "query_rows": self.query_rows, "similarity": self.similarity}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], stats: dict[str, Any]) -> "SeedResult":
        return cls(arrays["pool_rows"].astype(np.int64), arrays["query_rows"].astype(np.int64),
                   arrays["similarity"].astype(np.float32), stats)


def _best_per_pool_row(pool: np.ndarray, query: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One entry per pool row: the most similar query (ties: smallest query row); plus hit counts."""
    order = np.lexsort((query, -sim.astype(np.float64), pool))
    pool, query, sim = pool[order], query[order], sim[order]
    first = np.ones(len(pool), dtype=bool)
    first[1:] = pool[1:] != pool[:-1]
    starts = np.flatnonzero(first)
    hits = np.diff(np.append(starts, len(pool)))
    return pool[first], query[first], sim[first], hits


def retrieve_nearest(searcher: PoolSearcher, seeds: VectorSource, k: int, cap: int | None) -> SeedResult:
    """Sample mode: the k nearest pool images of every seed image."""
    k_eff = min(int(k), searcher.database.num_vectors)
    sims, ids = searcher.search(seeds, k_eff)
    valid = ids >= 0
    query = np.broadcast_to(np.arange(len(ids), dtype=np.int64)[:, None], ids.shape)[valid]
    pool, query, sim, hits = _best_per_pool_row(ids[valid].astype(np.int64), query, sims[valid].astype(np.float32))
    capped_out = 0
    if cap is not None and len(pool) > cap:
        keep = np.sort(np.lexsort((pool, -sim.astype(np.float64)))[:cap])
        capped_out = len(pool) - cap
        pool, query, sim, hits = pool[keep], query[keep], sim[keep], hits[keep]
    retrieved = int(valid.sum())
    stats = {
        "mode": "sample", "seed_images": int(len(ids)), "k": k_eff, "retrieved": retrieved,
        "unique": int(len(pool)) + capped_out, "collisions": retrieved - (int(len(pool)) + capped_out),
        "most_hits": int(hits.max()) if hits.size else 0, "capped_out": capped_out, "selected": int(len(pool)),
    }
    return SeedResult(pool, query, sim, stats)


def sample_linked_clusters(
    pool_assignment: np.ndarray,
    pool_similarity: np.ndarray,
    seed_assignment: np.ndarray,
    num_clusters: int,
    per_cluster: int,
    min_seed_images: int,
    cap: int | None,
    rng: np.random.Generator,
) -> SeedResult:
    """Cluster mode: `per_cluster` random pool images from each cluster with > `min_seed_images` seeds."""
    seeds_in = np.bincount(seed_assignment, minlength=num_clusters)
    sizes = np.bincount(pool_assignment, minlength=num_clusters)
    linked = seeds_in > min_seed_images
    quota = np.where(linked, np.minimum(sizes, per_cluster), 0).astype(np.int64)
    candidates = int(quota.sum())
    if cap is not None and candidates > cap:
        quota = waterfill(quota, int(cap), rng)
    rows = take_per_cluster(pool_assignment, rng.random(len(pool_assignment)), quota) if quota.sum() else np.zeros(0, np.int64)
    stats = {
        "mode": "cluster", "seed_images": int(len(seed_assignment)), "clusters_with_seeds": int(np.sum(seeds_in > 0)),
        "clusters_linked": int(linked.sum()), "per_cluster": int(per_cluster), "candidates": candidates,
        "capped_out": candidates - int(len(rows)), "selected": int(len(rows)),
    }
    return SeedResult(rows.astype(np.int64), np.full(len(rows), -1, np.int64), pool_similarity[rows].astype(np.float32), stats)
