"""Lloyd iterations with faiss.Kmeans (spherical), on in-memory float32 rows.

Used as the CPU reference and speed comparison for the torch engine. Differences: faiss
splits a large cluster to fill an empty one (ours re-seeds with far rows), and it has no
out-of-core or multi-rank mode, so the rows (or a `fit_sample`) must fit in RAM.
"""

from __future__ import annotations

import numpy as np


def faiss_spherical_kmeans(
    x: np.ndarray, init: np.ndarray, n_iter: int, seed: int, use_gpu: bool = False, stop_when_converged: bool = True
) -> tuple[np.ndarray, list[float]]:
    """(unit centroids [k, dim], mean cosine at each iteration) starting from `init`."""
    import faiss

    k, dim = init.shape
    kmeans = faiss.Kmeans(
        dim, k, niter=n_iter, spherical=True, seed=seed, verbose=False,
        max_points_per_centroid=max(1, len(x)),  # never subsample: use every row given
        min_points_per_centroid=1, gpu=bool(use_gpu),
        # faiss stops when the objective repeats exactly (threshold 0); -1 never stops early.
        early_stop_threshold=0.0 if stop_when_converged else -1.0,
    )
    kmeans.train(np.ascontiguousarray(x, dtype=np.float32), init_centroids=np.ascontiguousarray(init, np.float32))
    history = [float(v) / len(x) for v in kmeans.obj]
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32), history
