"""Spherical k-means (unit centroids, cosine assignment): the public entry point.

Scale notes. Data is streamed (`VectorSource`), centroids stay in memory: per pass the
device holds k x dim centroids (+ k x dim sums at `accumulate`) and one chunk. With
`fit_sample`, Lloyd runs on a random sample held in RAM and all rows are then assigned in
one streaming pass (the recipe for 10^8+ rows). Under torch.distributed each rank passes its
own consecutive row range; sums, counts and the objective are all-reduced, so every rank
ends with the same centroids as one process on all rows (up to float summation order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lvdtool.errors import ConfigError, InputError
from lvdtool.index.backend import Backend, as_backend
from lvdtool.index.cluster_context import ClusterContext
from lvdtool.index.distributed import distributed_active, partition
from lvdtool.index.kmeans_checkpoint import KMeansCheckpoint
from lvdtool.index.kmeans_faiss import faiss_spherical_kmeans
from lvdtool.index.kmeans_init import InitOptions, initial_centroids
from lvdtool.index.kmeans_torch import ACCUMULATE_DTYPES, LloydState, assign_chunks, lloyd_iteration
from lvdtool.index.vectors import (
    DEFAULT_CHUNK_ROWS,
    ArrayVectors,
    VectorSource,
    as_source,
    check_chunk_rows,
    gather_rows,
    to_memory,
)


@dataclass
class KMeansConfig:
    """How to run spherical k-means (everything but the data and the number of clusters)."""

    n_iter: int = 20
    seed: int = 0
    # "kmeans||" | "random" (kmeans_init.INITS). kmeans|| reduces ~rounds x k candidates with
    # k sequential steps; for k >= ~10^4 use "random" or a fit_sample.
    init: str = "kmeans||"
    init_rounds: int = 3  # kmeans|| rounds (data passes)
    init_oversampling: float = 1.0  # kmeans|| candidates per round, in multiples of k
    fit_sample: int | None = None  # Lloyd on this many random rows, then assign all rows
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    accumulate: str = "float32"  # "float64" for centroid sums over very large clusters
    engine: str = "auto"  # "auto" | "torch" | "faiss"
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "auto"  # "auto" | "fp32" | "bf16" (torch engine)
    distributed: bool | None = None  # None: all-reduce when a process group (>1 rank) exists
    reseed_empty: bool = True  # False: an empty cluster keeps its previous centroid
    stop_when_converged: bool = True  # stop once an update leaves the centroids unchanged


@dataclass
class KMeansResult:
    centroids: np.ndarray  # float32 [k, dim], unit rows
    assignment: np.ndarray  # int64 [rows]: nearest centroid of each (local) row
    similarity: np.ndarray  # float32 [rows]: cosine to that centroid
    objective_history: list[float] = field(default_factory=list)  # mean cosine per Lloyd pass (<= n_iter)
    reseeded: int = 0  # empty clusters re-seeded over all iterations
    engine: str = ""

    @property
    def objective(self) -> float:
        """Mean cosine of the local rows to their final centroid."""
        return float(self.similarity.mean()) if self.similarity.size else 0.0

    def sizes(self) -> np.ndarray:
        return np.bincount(self.assignment, minlength=len(self.centroids))


def _validate(source: VectorSource, n_clusters: int, config: KMeansConfig) -> None:
    if int(n_clusters) < 1:
        raise InputError(f"n_clusters: must be >= 1, got {n_clusters}")
    if config.n_iter < 0:
        raise ConfigError(f"n_iter: must be >= 0, got {config.n_iter}")
    if config.accumulate not in ACCUMULATE_DTYPES:
        raise ConfigError(f"accumulate: expected one of {', '.join(ACCUMULATE_DTYPES)}, got {config.accumulate!r}")
    if config.fit_sample is not None and config.fit_sample < n_clusters:
        raise ConfigError(f"fit_sample: {config.fit_sample} rows cannot make {n_clusters} clusters")
    check_chunk_rows(config.chunk_rows)


def _engine_for(backend: Backend, source: VectorSource, config: KMeansConfig, active: bool) -> Backend:
    """faiss only runs in-memory, single-process k-means; fall back to torch otherwise."""
    if backend.engine != "faiss":
        return backend
    in_memory = isinstance(source, ArrayVectors) or config.fit_sample is not None
    if active or not in_memory:
        if backend.engine_forced:
            reason = "distributed runs" if active else "sources not in memory without fit_sample"
            raise ConfigError(f"engine: faiss k-means does not support {reason}; use engine='torch'")
        return Backend("torch", backend.device, "fp32", backend.faiss_gpu)
    return backend


def _lloyd(source: VectorSource, init: torch.Tensor, ctx: ClusterContext, config: KMeansConfig,
           checkpoint: KMeansCheckpoint | None = None, start: tuple[LloydState, int, bool] | None = None) -> LloydState:
    if start is not None:
        state, done, converged = start
        state.centroids = state.centroids.to(ctx.device, torch.float32)
        if converged:
            return state
    else:
        state, done = LloydState(centroids=init.to(ctx.device, torch.float32), history=[]), 0
        if checkpoint is not None:
            checkpoint.save(state, 0, False)
    for iteration in range(done, config.n_iter):
        previous = state.centroids
        lloyd_iteration(source, state, ctx, config.accumulate, config.reseed_empty)
        # Same assignment -> bitwise-same sums -> same centroids: later passes would repeat.
        converged = config.stop_when_converged and torch.equal(previous, state.centroids)
        last = converged or iteration + 1 == config.n_iter
        if checkpoint is not None and (last or (iteration + 1) % checkpoint.every == 0):
            checkpoint.save(state, iteration + 1, converged)
        if converged:
            break
    return state


def spherical_kmeans(
    vectors: np.ndarray | VectorSource,
    n_clusters: int,
    config: KMeansConfig | None = None,
    *,
    init_centroids: np.ndarray | None = None,
    backend: Backend | None = None,
    checkpoint: KMeansCheckpoint | None = None,
) -> KMeansResult:
    """Cluster unit vectors into `n_clusters` by cosine; see `KMeansConfig` for options.

    `init_centroids` [k, dim] replaces the init method (used for warm starts and to compare
    engines from the same start). `checkpoint` (torch engine) stores the centroids after init and
    every `checkpoint.every` iterations, and a rerun resumes from the last one.
    """
    config = config or KMeansConfig()
    source = as_source(vectors)
    k = int(n_clusters)
    _validate(source, k, config)
    active = distributed_active(config.distributed)
    part = partition(source.num_vectors, active)
    if part.global_rows < k and init_centroids is None:
        raise InputError(f"n_clusters: {k} clusters need at least as many rows, got {part.global_rows}")
    backend = as_backend(backend, config.device, config.engine, config.precision)
    backend = _engine_for(backend, source, config, active)
    # Init and the final assignment always run on the torch engine (CPU when faiss does Lloyd).
    torch_backend = backend if backend.engine == "torch" else Backend("torch", "cpu", "fp32", False)
    assign_ctx = ClusterContext(torch_backend, config.chunk_rows, part, active)

    fit_source, fit_ctx = source, assign_ctx
    if config.fit_sample is not None and config.fit_sample < part.global_rows:
        rows = np.sort(np.random.default_rng(config.seed).choice(part.global_rows, config.fit_sample, replace=False))
        # Each rank keeps the sample rows of its own range (in RAM, streamed to the device chunk by
        # chunk): the sample is never one tensor on one device; Lloyd on it is all-reduced like the data.
        lo, hi = np.searchsorted(rows, [part.row_offset, part.row_offset + part.local_rows])
        fit_source = ArrayVectors(gather_rows(source, rows[lo:hi] - part.row_offset, config.chunk_rows))
        fit_ctx = ClusterContext(torch_backend, config.chunk_rows, partition(int(hi - lo), active), active)

    if backend.engine != "torch":
        checkpoint = None  # faiss runs all of Lloyd in one call: nothing to resume from
    start = checkpoint.load(k, source.dim) if checkpoint is not None else None
    if start is not None:
        init = start[0].centroids
    elif init_centroids is not None:
        init = torch.from_numpy(np.ascontiguousarray(init_centroids, dtype=np.float32))
        if tuple(init.shape) != (k, source.dim):
            raise InputError(f"init_centroids: expected shape ({k}, {source.dim}), got {tuple(init.shape)}")
    else:
        options = InitOptions(rounds=config.init_rounds, oversampling=config.init_oversampling)
        init = initial_centroids(fit_source, k, config.seed, fit_ctx, config.init, options)
    if start is None:
        init = torch.nn.functional.normalize(init.float(), dim=1)

    if backend.engine == "faiss":
        centroids_np, history = faiss_spherical_kmeans(
            to_memory(fit_source, config.chunk_rows), init.cpu().numpy(), config.n_iter, config.seed,
            use_gpu=backend.faiss_gpu, stop_when_converged=config.stop_when_converged,
        )
        centroids, reseeded = torch.from_numpy(centroids_np), 0
    else:
        state = _lloyd(fit_source, init, fit_ctx, config, checkpoint, start)
        centroids, history, reseeded = state.centroids, state.history, state.reseeded

    assignment, similarity = assign_chunks(source, centroids.to(assign_ctx.device), assign_ctx)
    return KMeansResult(
        centroids=centroids.cpu().numpy().astype(np.float32),
        assignment=assignment,
        similarity=similarity,
        objective_history=history,
        reseeded=reseeded,
        engine=backend.engine,
    )


def assign(
    vectors: np.ndarray | VectorSource,
    centroids: np.ndarray,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str = "auto",
    precision: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int64) and cosine (float32) of every row, streamed (local rows only)."""
    source = as_source(vectors)
    backend = as_backend(None, device, "torch", precision)
    ctx = ClusterContext(backend, check_chunk_rows(chunk_rows), partition(source.num_vectors, False), False)
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)).to(ctx.device)
    return assign_chunks(source, c, ctx)
