"""The pool's k-means clustering and the DINOv3-style balanced subset (hierarchical k-means).

Both are global steps stored under `_work/` (centroids, assignments, the hierarchy) and reused
on rerun. Pools that fit in `memory_limit_gb` as float32 are clustered in RAM (any engine);
larger ones stream from the artifact (torch engine; with `fit_sample`, Lloyd runs on a sample and
every row is then assigned in one pass: the recipe for 10^8+ images).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lvdtool.curation.retrieval import SeedResult
from lvdtool.curation.work_state import WorkState
from lvdtool.errors import ConfigError, InputError
from lvdtool.index import Hierarchy, KMeansConfig, LevelSpec, balanced_sample, hierarchical_kmeans, spherical_kmeans
from lvdtool.index.vectors import ArrayVectors, VectorSource, to_memory


@dataclass
class KMeansOptions:
    n_iter: int = 20
    init: str = "kmeans||"  # kmeans|| | random
    fit_sample: int | None = None  # Lloyd on this many random pool images, then assign all
    seed: int = 0
    accumulate: str = "float32"  # float64 for very large clusters
    memory_limit_gb: float = 16.0  # pools up to this size (float32) are clustered in RAM


@dataclass
class LevelConfig:
    n_clusters: int = 1000
    n_resampling_steps: int = 0
    sample_size: int = 1
    sampling: str = "closest"  # closest | random


@dataclass
class HKMeansConfig:
    target: int | None = None  # images in the balanced subset
    # Vo et al.'s web-scale tree (levels bottom-up); DINOv3 used 5 levels (200M, 8M, 800k, 100k, 25k).
    levels: list[LevelConfig] = field(default_factory=lambda: [
        LevelConfig(10_000_000, 1, 1), LevelConfig(500_000, 10, 10), LevelConfig(50_000, 10, 5), LevelConfig(10_000, 10, 3)])
    strategy: str = "random"  # random | closest (to the level-0 centroid)


def kmeans_config(options: KMeansOptions, engine: str, device: str, precision: str, chunk_rows: int) -> KMeansConfig:
    return KMeansConfig(n_iter=options.n_iter, seed=options.seed, init=options.init, fit_sample=options.fit_sample,
                        chunk_rows=chunk_rows, accumulate=options.accumulate, engine=engine, device=device,
                        precision=precision, distributed=False)


def in_memory_if_small(source: VectorSource, limit_gb: float, chunk_rows: int) -> VectorSource:
    if source.num_vectors * source.dim * 4 <= limit_gb * (1 << 30):
        return ArrayVectors(to_memory(source, chunk_rows))
    return source


def pool_kmeans(source: VectorSource, n_clusters: int, config: KMeansConfig, work: WorkState) -> dict[str, np.ndarray]:
    """centroids [C, D], assignment [N], similarity [N] of the pool, from `_work/pool_kmeans.npz` when present."""
    if n_clusters > source.num_vectors:
        raise ConfigError(f"retrieval.pool_clusters: {n_clusters} clusters need at least as many pool images, "
                          f"the pool has {source.num_vectors}")

    def compute():
        result = spherical_kmeans(source, n_clusters, config)
        return {"centroids": result.centroids, "assignment": result.assignment, "similarity": result.similarity}, {
            "objective": result.objective, "engine": result.engine}

    return work.cached("pool_kmeans", compute)[0]


def _save_hierarchy(h: Hierarchy) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for level in range(h.num_levels):
        arrays[f"assignment_{level}"] = h.assignments[level]
        arrays[f"centroids_{level}"] = h.centroids[level]
        arrays[f"similarity_{level}"] = h.similarities[level]
    return arrays


def _load_hierarchy(arrays: dict[str, np.ndarray], levels: int) -> Hierarchy:
    return Hierarchy(assignments=[arrays[f"assignment_{i}"] for i in range(levels)],
                     centroids=[arrays[f"centroids_{i}"] for i in range(levels)],
                     similarities=[arrays[f"similarity_{i}"] for i in range(levels)])


def balanced_subset(
    source: VectorSource, options: HKMeansConfig, config: KMeansConfig, work: WorkState, seed: int
) -> SeedResult:
    """Hierarchical k-means of the pool, then `target` images sampled evenly down the tree (seeded by `seed`)."""
    if options.target is None or options.target < 1:
        raise ConfigError("hkmeans.target: set the number of images of the balanced subset (--target N)")
    if options.target > source.num_vectors:
        raise InputError(f"hkmeans.target: {options.target} exceeds the {source.num_vectors} pool images")
    specs = [LevelSpec(lv.n_clusters, lv.n_resampling_steps, lv.sample_size, lv.sampling) for lv in options.levels]
    if not specs:
        raise ConfigError("hkmeans.levels: need at least one level")

    def compute():
        return _save_hierarchy(hierarchical_kmeans(source, specs, config)), {}

    hierarchy = _load_hierarchy(work.cached("hierarchy", compute)[0], len(specs))
    rows = balanced_sample(hierarchy, int(options.target), seed=seed, strategy=options.strategy)
    sizes = hierarchy.sizes(hierarchy.num_levels - 1)
    stats = {"mode": "balanced", "target": int(options.target), "levels": [int(s.n_clusters) for s in specs],
             "top_level_largest": int(sizes.max()), "selected": int(len(rows))}
    return SeedResult(rows.astype(np.int64), np.full(len(rows), -1, np.int64),
                      hierarchy.similarities[0][rows].astype(np.float32), stats)
