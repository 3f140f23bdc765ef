"""Nearest-neighbour search: the entry points used by dedup, retrieval and evaluation.

`index="Flat"` is exact: the database is streamed in chunks of `chunk_rows` and the top-k
merged across chunks (memory bounds in `exact.py`). Any other faiss index_factory string
("IVF4096,PQ64", "IVF1024,Flat", ...) builds an approximate faiss index (trained on a sample,
filled chunk by chunk; see `faiss_index.py`), searched with `nprobe` lists per query.
For billions of vectors: IVF-PQ per database shard or per rank (`distributed=True`), top-k
merged over shards.
"""

from __future__ import annotations

import numpy as np
import torch

from lvdtool.errors import ConfigError, InputError
from lvdtool.index.backend import Backend, as_backend
from lvdtool.index.distributed import all_gather_equal, distributed_active, partition
from lvdtool.index.exact import (
    DEFAULT_QUERY_BLOCK_ROWS,
    DEFAULT_QUERY_CHUNK_ROWS,
    METRICS,
    exact_knn,
    exact_range,
)
from lvdtool.index.faiss_index import (
    build_faiss_index,
    range_search_faiss_index,
    search_faiss_index,
    set_nprobe,
)
from lvdtool.index.range_result import RangeResult
from lvdtool.index.topk import merge_topk
from lvdtool.index.vectors import DEFAULT_CHUNK_ROWS, VectorSource, as_source, check_chunk_rows, check_same_dim

EXACT_INDEX = "Flat"
DEFAULT_NPROBE = 16


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ConfigError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def _resolve(index: str, backend: Backend) -> None:
    if index != EXACT_INDEX and backend.engine == "torch" and backend.engine_forced:
        raise ConfigError(f"index: {index!r} is a faiss index; use engine='faiss' or 'auto' (torch runs only 'Flat')")


def _approximate_index(
    database: VectorSource, index: str, metric: str, train_sample: int | None, chunk_rows: int, seed: int,
    nprobe: int, backend: Backend,
):
    built = build_faiss_index(
        database, index, metric=metric, train_sample=train_sample, chunk_rows=chunk_rows, seed=seed,
        use_gpu=backend.faiss_gpu,
    )
    set_nprobe(built, nprobe)
    return built


def _merge_over_ranks(sims: np.ndarray, ids: np.ndarray, local_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each rank searched its own database shard with the same queries: merge into global ids."""
    part = partition(local_rows, True)
    global_ids = np.where(ids >= 0, ids + part.row_offset, ids)
    all_sims = all_gather_equal(torch.from_numpy(sims), True).view(part.world_size, *sims.shape)
    all_ids = all_gather_equal(torch.from_numpy(global_ids), True).view(part.world_size, *ids.shape)
    return merge_topk([(all_sims[r].numpy(), all_ids[r].numpy()) for r in range(part.world_size)], k)


def knn_search(
    queries: np.ndarray | VectorSource,
    database: np.ndarray | VectorSource,
    k: int,
    *,
    metric: str = "ip",
    index: str = EXACT_INDEX,
    nprobe: int = DEFAULT_NPROBE,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    query_chunk_rows: int = DEFAULT_QUERY_CHUNK_ROWS,
    query_block_rows: int = DEFAULT_QUERY_BLOCK_ROWS,
    train_sample: int | None = None,
    seed: int = 0,
    device: str = "auto",
    engine: str = "auto",
    precision: str = "auto",
    backend: Backend | None = None,
    distributed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar database rows per query: (sims float32 [Nq, k], ids int64 [Nq, k]).

    Rows are sorted by similarity descending, ties by id ascending; missing neighbours
    (database smaller than k) are sim -inf, id -1. metric="ip" expects L2-normalised inputs
    (cosine); metric="cosine" normalises chunks on the fly.
    distributed=True: every rank passes the same queries and its own database shard (ranks
    hold consecutive rows in rank order); ids are global and all ranks get the merged result.
    """
    q_src, db_src = as_source(queries, "queries"), as_source(database, "database")
    check_same_dim(q_src, db_src, "queries", "database")
    _check_metric(metric)
    chunk_rows = check_chunk_rows(chunk_rows)
    if int(k) < 1:
        raise InputError(f"k: must be >= 1, got {k}")
    backend = as_backend(backend, device, engine, precision)
    _resolve(index, backend)
    if index == EXACT_INDEX:
        sims, ids = exact_knn(
            q_src, db_src, int(k), backend, metric=metric, chunk_rows=chunk_rows,
            query_chunk_rows=check_chunk_rows(query_chunk_rows, "query_chunk_rows"),
            query_block_rows=check_chunk_rows(query_block_rows, "query_block_rows"),
        )
    else:
        built = _approximate_index(db_src, index, metric, train_sample, chunk_rows, seed, nprobe, backend)
        sims, ids = search_faiss_index(built, q_src, int(k), metric=metric, chunk_rows=chunk_rows)
    if distributed_active(distributed):
        sims, ids = _merge_over_ranks(sims, ids, db_src.num_vectors, int(k))
    return sims, ids


def range_search(
    queries: np.ndarray | VectorSource,
    database: np.ndarray | VectorSource,
    threshold: float,
    *,
    metric: str = "ip",
    index: str = EXACT_INDEX,
    nprobe: int = DEFAULT_NPROBE,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    query_chunk_rows: int = DEFAULT_QUERY_CHUNK_ROWS,
    query_block_rows: int = DEFAULT_QUERY_BLOCK_ROWS,
    train_sample: int | None = None,
    seed: int = 0,
    device: str = "auto",
    engine: str = "auto",
    precision: str = "auto",
    backend: Backend | None = None,
    upper_triangle: bool = False,
) -> RangeResult:
    """Every database row with similarity strictly above `threshold`, per query.

    upper_triangle=True is for a set searched against itself: only pairs with database row >
    query row are kept, and the exact path skips the blocks below the diagonal.
    """
    q_src, db_src = as_source(queries, "queries"), as_source(database, "database")
    check_same_dim(q_src, db_src, "queries", "database")
    _check_metric(metric)
    chunk_rows = check_chunk_rows(chunk_rows)
    backend = as_backend(backend, device, engine, precision)
    _resolve(index, backend)
    if index == EXACT_INDEX:
        return exact_range(
            q_src, db_src, float(threshold), backend, metric=metric, chunk_rows=chunk_rows,
            query_chunk_rows=check_chunk_rows(query_chunk_rows, "query_chunk_rows"),
            query_block_rows=check_chunk_rows(query_block_rows, "query_block_rows"),
            upper_triangle=upper_triangle,
        )
    built = _approximate_index(db_src, index, metric, train_sample, chunk_rows, seed, nprobe, backend)
    result = range_search_faiss_index(built, q_src, float(threshold), metric=metric, chunk_rows=chunk_rows)
    if not upper_triangle:
        return result
    rows, ids, sims = result.pairs()
    keep = ids > rows
    return RangeResult.from_triples(q_src.num_vectors, rows[keep], ids[keep], sims[keep])


def drop_self(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From k+1 neighbours of each row of a set searched against itself, drop the row itself.

    With exact duplicates the row need not come first; when it is absent (approximate index)
    the last neighbour is dropped instead.
    """
    is_self = ids == np.arange(len(ids), dtype=np.int64)[:, None]
    keep = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, keep, axis=1), np.take_along_axis(ids, keep, axis=1)


def self_knn(vectors: np.ndarray | VectorSource, k: int, **options) -> tuple[np.ndarray, np.ndarray]:
    """k nearest other rows of every row (options as in `knn_search`)."""
    source = as_source(vectors)
    sims, ids = knn_search(source, source, int(k) + 1, **options)
    return drop_self(sims, ids, int(k))


def self_range_pairs(
    vectors: np.ndarray | VectorSource, threshold: float, **options
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of rows with similarity above `threshold`: (i, j, sims), sorted by (i, j).

    Options as in `range_search`; the exact path computes only blocks on or above the diagonal.
    """
    source = as_source(vectors)
    return range_search(source, source, threshold, upper_triangle=True, **options).pairs()
