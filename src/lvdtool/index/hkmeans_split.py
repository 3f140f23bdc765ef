"""The split of a hierarchical k-means level (Vo et al. 2024, web-scale level 0).

A level with `n_splits: S > 1` runs k-means with `n_clusters // S` coarse clusters (e.g. 100k),
then clusters the points of every coarse cluster into `min(S, its size)` sub-clusters (as
facebookresearch/ssl-data-curation's split does), dropping sub-clusters left empty: about
`n_clusters` clusters, which never needs an N x n_clusters assignment or one n_clusters-centroid
k-means.

Restart unit: a *batch* of consecutive coarse clusters holding at most `batch_rows` points (a
coarse cluster larger than that is a batch alone), stored through `unit_store`
(`level<i>-split<b>`); a rerun loads finished batches and computes the rest, with the same bytes
(each coarse cluster's sub-k-means is seeded by its id). Memory: one batch's vectors
(`batch_rows x dim` float32) plus 8 (rows sorted by coarse cluster, int64) + 8 + 4 (labels int64,
similarity float32 of the output) B per row; the caller holds the coarse labels (8 B/row). Rows
are gathered from the source per batch: one streaming pass over an out-of-core source per batch
(an in-memory source is indexed directly).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from lvdtool.index.kmeans import KMeansConfig, spherical_kmeans
from lvdtool.index.vectors import VectorSource, as_source, gather_rows

UnitStore = Callable[[str, Callable[[], tuple]], tuple]
DEFAULT_SPLIT_BATCH_ROWS = 1 << 20  # 4 GiB of float32 vectors at dim 1024


def split_batches(sizes: np.ndarray, batch_rows: int) -> np.ndarray:
    """Boundaries [B + 1] of batches of consecutive coarse clusters, each <= batch_rows points
    (or one cluster); a pure function of the sizes, so a rerun cuts the same batches."""
    bounds, total = [0], 0
    for cluster, size in enumerate(sizes.tolist()):
        if total and total + size > batch_rows:
            bounds.append(cluster)
            total = 0
        total += size
    bounds.append(len(sizes))
    return np.asarray(bounds, dtype=np.int64)


def _split_batch(points: np.ndarray, sizes: np.ndarray, first_cluster: int, n_splits: int, config: KMeansConfig,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-clusters of the coarse clusters of one batch (points sorted by coarse cluster): centroids
    [c, dim], label of each point (0..c-1, batch order) int64, similarity float32."""
    centroids, labels = [], np.empty(len(points), np.int64)
    sims = np.empty(len(points), np.float32)
    start, made = 0, 0
    for offset, size in enumerate(sizes.tolist()):
        if size == 0:
            continue
        block = points[start:start + size]
        k = min(n_splits, size)
        result = spherical_kmeans(block, k, replace(config, seed=seed + first_cluster + offset))
        used = np.bincount(result.assignment, minlength=k) > 0  # drop sub-clusters left empty
        renumber = np.cumsum(used) - 1
        centroids.append(result.centroids[used])
        labels[start:start + size] = made + renumber[result.assignment]
        sims[start:start + size] = result.similarity
        made += int(used.sum())
        start += size
    dim = points.shape[1]
    return (np.concatenate(centroids) if centroids else np.empty((0, dim), np.float32)), labels, sims


def split_level(
    source: np.ndarray | VectorSource,
    coarse_labels: np.ndarray,
    n_coarse: int,
    n_splits: int,
    config: KMeansConfig,
    seed: int,
    *,
    name: str = "split",
    batch_rows: int = DEFAULT_SPLIT_BATCH_ROWS,
    unit_store: UnitStore | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split every coarse cluster of `coarse_labels` into up to `n_splits` sub-clusters; returns
    (centroids [~n_coarse * n_splits, dim], label int64 [N], similarity float32 [N]) in coarse
    cluster order. Sub-k-means use kmeans|| (k is small) on the points of one coarse cluster."""
    # kmeans|| for the small k of a sub-clustering (a level of 10^5+ clusters resolves to random init),
    # with >= 2k candidates per round: at 1k it ended in a local minimum (two centroids in one
    # planted sub-blob) on ~2% of 3-sub-blob clusters, at 2k on none of 180.
    sub_config = replace(config, fit_sample=None, init="kmeans||", distributed=False,
                         init_oversampling=max(config.init_oversampling, 2.0))
    source = as_source(source)
    sizes = np.bincount(coarse_labels, minlength=n_coarse)
    order = np.argsort(coarse_labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    labels = np.empty(len(coarse_labels), np.int64)
    sims = np.empty(len(coarse_labels), np.float32)
    centroids, made = [], 0
    bounds = split_batches(sizes, batch_rows)
    for batch in range(len(bounds) - 1):
        lo, hi = int(bounds[batch]), int(bounds[batch + 1])
        rows = order[starts[lo]:starts[hi]]

        def fit(rows=rows, lo=lo, hi=hi) -> tuple:
            return _split_batch(gather_rows(source, rows, config.chunk_rows), sizes[lo:hi], lo, n_splits,
                                sub_config, seed)

        c, batch_labels, batch_sims = unit_store(f"{name}{batch:05d}", fit) if unit_store is not None else fit()
        labels[rows] = made + batch_labels
        sims[rows] = batch_sims
        centroids.append(c)
        made += len(c)
    return np.concatenate(centroids), labels, sims
