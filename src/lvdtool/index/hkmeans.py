"""Hierarchical spherical k-means with resampling (Vo et al. 2024).

Level 0 clusters the rows; level l clusters the centroids of level l-1. Within a level:
k-means on all its points, then `n_resampling_steps` times: take `sample_size` points per
cluster (closest to the centroid, or random), rerun k-means on that subset from the current
centroids, and reassign all points. Resampling gives every cluster the same weight, which
pulls centroids away from dense modes.

A level with `n_splits: S > 1` (Vo et al.'s web-scale level 0: 100k clusters each split into
100) runs the above with `n_clusters // S` clusters, then splits each cluster into up to S
sub-clusters (`hkmeans_split`): its resampling steps act on the coarse clusters, never on the
~n_clusters split ones (a resampling refit would need the n_clusters-centroid k-means the split
avoids; ssl-data-curation refuses resampling on a split level).

Level 0 streams the rows (`VectorSource`, optionally `fit_sample`); upper levels are small
and in memory. Runs in one process (resampling picks rows across the whole set).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lvdtool.errors import ConfigError, InputError
from lvdtool.index.hkmeans_split import DEFAULT_SPLIT_BATCH_ROWS, UnitStore, split_level
from lvdtool.index.kmeans import KMeansConfig, assign, spherical_kmeans
from lvdtool.index.selection import take_per_cluster
from lvdtool.index.vectors import VectorSource, as_source, gather_rows

SAMPLINGS = ("closest", "random")


@dataclass(frozen=True)
class LevelSpec:
    n_clusters: int
    n_resampling_steps: int = 0
    sample_size: int = 1  # points per cluster in each resampling step
    sampling: str = "closest"  # "closest" | "random"
    n_splits: int = 1  # > 1: k-means with n_clusters // n_splits, then each cluster split (hkmeans_split)

    @property
    def n_coarse(self) -> int:
        """Clusters of the level's k-means (before any split)."""
        return self.n_clusters // self.n_splits


@dataclass
class Hierarchy:
    """A cluster tree. assignments[0]: row -> level-0 cluster; assignments[l]: level-(l-1)
    cluster -> level-l cluster. similarities[l] is the cosine of each level-l point (row or
    child centroid) to its cluster centroid."""

    assignments: list[np.ndarray]
    centroids: list[np.ndarray]
    similarities: list[np.ndarray]

    @property
    def num_levels(self) -> int:
        return len(self.assignments)

    @property
    def num_rows(self) -> int:
        return len(self.assignments[0])

    def sizes(self, level: int) -> np.ndarray:
        """Rows under each cluster of `level` (int64)."""
        counts = np.bincount(self.assignments[0], minlength=len(self.centroids[0])).astype(np.int64)
        for upper in range(1, level + 1):
            counts = np.bincount(self.assignments[upper], weights=counts, minlength=len(self.centroids[upper]))
            counts = counts.astype(np.int64)
        return counts

    def row_clusters(self, level: int) -> np.ndarray:
        """The level-`level` cluster of every row."""
        labels = self.assignments[0]
        for upper in range(1, level + 1):
            labels = self.assignments[upper][labels]
        return labels

    def save(self, path: str | Path) -> None:
        arrays = {}
        for level in range(self.num_levels):
            arrays[f"assignment_{level}"] = self.assignments[level]
            arrays[f"centroids_{level}"] = self.centroids[level]
            arrays[f"similarity_{level}"] = self.similarities[level]
        np.savez(path, num_levels=np.array(self.num_levels), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Hierarchy":
        with np.load(path) as data:
            levels = int(data["num_levels"])
            return cls(
                assignments=[data[f"assignment_{lv}"] for lv in range(levels)],
                centroids=[data[f"centroids_{lv}"] for lv in range(levels)],
                similarities=[data[f"similarity_{lv}"] for lv in range(levels)],
            )


def _as_spec(level: LevelSpec | Sequence, index: int) -> LevelSpec:
    spec = level if isinstance(level, LevelSpec) else LevelSpec(*level)
    if spec.n_clusters < 1 or spec.n_resampling_steps < 0 or spec.sample_size < 1:
        raise ConfigError(f"levels[{index}]: need n_clusters >= 1, n_resampling_steps >= 0, sample_size >= 1")
    if spec.sampling not in SAMPLINGS:
        raise ConfigError(f"levels[{index}].sampling: expected one of {', '.join(SAMPLINGS)}, got {spec.sampling!r}")
    check_splits(spec.n_clusters, spec.n_splits, f"levels[{index}].n_splits")
    return spec


def check_splits(n_clusters: int, n_splits: int, key: str) -> None:
    """n_splits >= 1 dividing n_clusters (the coarse k-means has n_clusters // n_splits clusters)."""
    if not isinstance(n_splits, int) or n_splits < 1:
        raise ConfigError(f"{key}: must be an integer >= 1, got {n_splits!r}")
    if n_clusters % n_splits:
        raise ConfigError(f"{key}: {n_splits} does not divide n_clusters {n_clusters}")


def _cluster_level(
    source: VectorSource, spec: LevelSpec, config: KMeansConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    result = spherical_kmeans(source, spec.n_clusters, replace(config, seed=seed))
    centroids, labels, sims = result.centroids, result.assignment, result.similarity
    # The subset has few rows per cluster (maybe fewer than k): torch Lloyd, where an
    # emptied cluster keeps its centroid (faiss needs n >= k and splits clusters instead).
    subset_config = replace(config, fit_sample=None, reseed_empty=False, engine="torch")
    for step in range(spec.n_resampling_steps):
        step_seed = seed + 1 + step
        if spec.sampling == "closest":
            key = -sims
        else:
            key = np.random.default_rng(step_seed).random(len(labels))
        picked = take_per_cluster(labels, key, spec.sample_size)
        subset = gather_rows(source, picked, config.chunk_rows)
        refit = spherical_kmeans(subset, spec.n_clusters, replace(subset_config, seed=step_seed),
                                 init_centroids=centroids)
        centroids = refit.centroids
        labels, sims = assign(source, centroids, chunk_rows=config.chunk_rows, device=config.device,
                              precision=config.precision)
    return centroids, labels, sims


def hierarchical_kmeans(
    vectors: np.ndarray | VectorSource,
    levels: Sequence[LevelSpec | Sequence],
    config: KMeansConfig | None = None,
    level_store: Callable[[int, Callable[[], tuple]], tuple] | None = None,
    unit_store: UnitStore | None = None,
    split_batch_rows: int = DEFAULT_SPLIT_BATCH_ROWS,
) -> Hierarchy:
    """Cluster rows, then centroids of centroids; `levels` bottom-up, e.g.
    [(1000, 10, 5), (100, 10, 3)] = (n_clusters, n_resampling_steps, sample_size[, sampling[, n_splits]]).

    `level_store(index, fit)` returns level `index`'s (centroids, labels, sims), calling `fit()` only
    when it has not stored them: each level is a restart unit (a killed run resumes at the first
    level not stored). `unit_store(name, fit)` does the same for the parts of a split level
    (`level<i>-coarse`, `level<i>-split<b>`: batches of at most `split_batch_rows` points)."""
    config = replace(config or KMeansConfig(), distributed=False)
    specs = [_as_spec(level, i) for i, level in enumerate(levels)]
    if not specs:
        raise ConfigError("levels: need at least one level")
    source = as_source(vectors)
    assignments, centroids, similarities = [], [], []
    points = source
    for index, spec in enumerate(specs):
        if spec.n_coarse > points.num_vectors:
            raise InputError(f"levels[{index}].n_clusters: {spec.n_coarse} exceeds its {points.num_vectors} points")
        level_config = config if index == 0 else replace(config, fit_sample=None)
        def fit(points=points, spec=spec, level_config=level_config, index=index) -> tuple:
            seed = config.seed + 1000 * index
            if spec.n_splits == 1:
                return _cluster_level(points, spec, level_config, seed)
            coarse_spec = replace(spec, n_clusters=spec.n_coarse, n_splits=1)

            def coarse() -> tuple:
                return _cluster_level(points, coarse_spec, level_config, seed)

            _, coarse_labels, _ = unit_store(f"level{index}-coarse", coarse) if unit_store is not None else coarse()
            return split_level(points, coarse_labels, spec.n_coarse, spec.n_splits, level_config, seed + 500,
                               name=f"level{index}-split", batch_rows=split_batch_rows, unit_store=unit_store)

        c, labels, sims = level_store(index, fit) if level_store is not None else fit()
        assignments.append(labels)
        centroids.append(c)
        similarities.append(sims)
        points = as_source(c, f"level {index} centroids")
    return Hierarchy(assignments=assignments, centroids=centroids, similarities=similarities)
