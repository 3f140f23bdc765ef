"""Exact (brute-force) k-NN and range search, streaming both sides in chunks.

Loop order: query blocks (outer, held on the device with their running top-k), database
chunks (each read once per query block), query sub-chunks (one matrix product each).
Memory on the compute device, float32:
    query_block_rows x (dim + 3 k)            queries and running top-k
  + chunk_rows x dim (x2 at bf16)             one database chunk
  + query_chunk_rows x chunk_rows             one similarity block
The database is read ceil(num_queries / query_block_rows) times, so cost is
O(num_queries x num_database x dim): fine to ~10^6 x 10^6 on a GPU; beyond that use an IVF
index (`knn.py`) or shard the database over ranks and merge top-k (`topk.merge_topk`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from lvdtool.index.backend import Backend
from lvdtool.index.kernels import make_kernel
from lvdtool.index.range_result import RangeResult, concat_or_empty
from lvdtool.index.topk import empty_topk, merge_topk_torch, sort_neighbours
from lvdtool.index.vectors import VectorSource, l2_normalize

DEFAULT_QUERY_BLOCK_ROWS = 1 << 18
DEFAULT_QUERY_CHUNK_ROWS = 2048
METRICS = ("ip", "cosine")


def iter_prepared(source: VectorSource, chunk_rows: int, metric: str) -> Iterator[tuple[int, np.ndarray]]:
    """Chunks as float32, normalised on the fly for metric="cosine"."""
    for start, block in source.iter_chunks(chunk_rows):
        yield start, (l2_normalize(block) if metric == "cosine" else np.ascontiguousarray(block, np.float32))


def _kernel_device(backend: Backend) -> torch.device:
    return backend.torch_device if backend.engine == "torch" else torch.device("cpu")


def exact_knn(
    queries: VectorSource,
    database: VectorSource,
    k: int,
    backend: Backend,
    *,
    metric: str = "ip",
    chunk_rows: int,
    query_chunk_rows: int = DEFAULT_QUERY_CHUNK_ROWS,
    query_block_rows: int = DEFAULT_QUERY_BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """(sims float32 [Nq, k], ids int64 [Nq, k]) of the k most similar database rows per query."""
    kernel = make_kernel(backend)
    device = _kernel_device(backend)
    out_sims = np.empty((queries.num_vectors, k), dtype=np.float32)
    out_ids = np.empty((queries.num_vectors, k), dtype=np.int64)
    for q_start, q_block in iter_prepared(queries, query_block_rows, metric):
        starts = range(0, len(q_block), query_chunk_rows)
        loaded = [kernel.load_queries(q_block[s : s + query_chunk_rows]) for s in starts]
        best = [empty_topk(min(query_chunk_rows, len(q_block) - s), k, device) for s in starts]
        for d_start, d_block in iter_prepared(database, chunk_rows, metric):
            chunk = kernel.load_database(d_block)
            for part, q_part in enumerate(loaded):
                sims, ids = kernel.topk(q_part, chunk, k)
                best[part] = merge_topk_torch(*best[part], sims, ids + d_start, k)
        rows = slice(q_start, q_start + len(q_block))
        out_sims[rows] = torch.cat([s for s, _ in best]).cpu().numpy()
        out_ids[rows] = torch.cat([i for _, i in best]).cpu().numpy()
    return sort_neighbours(out_sims, out_ids)


def exact_range(
    queries: VectorSource,
    database: VectorSource,
    threshold: float,
    backend: Backend,
    *,
    metric: str = "ip",
    chunk_rows: int,
    query_chunk_rows: int = DEFAULT_QUERY_CHUNK_ROWS,
    query_block_rows: int = DEFAULT_QUERY_BLOCK_ROWS,
    upper_triangle: bool = False,
) -> RangeResult:
    """All (query, database row) pairs with similarity strictly above `threshold`.

    upper_triangle=True (queries and database are the same rows) keeps only pairs with
    database row > query row and skips blocks that hold none, halving the work.
    Results are held in RAM: about 16 bytes per pair.
    """
    kernel = make_kernel(backend)
    found_rows, found_ids, found_sims = [], [], []
    for q_start, q_block in iter_prepared(queries, query_block_rows, metric):
        starts = list(range(0, len(q_block), query_chunk_rows))
        loaded = [kernel.load_queries(q_block[s : s + query_chunk_rows]) for s in starts]
        for d_start, d_block in iter_prepared(database, chunk_rows, metric):
            d_last = d_start + len(d_block) - 1
            chunk = None
            for s, q_part in zip(starts, loaded):
                first_query = q_start + s
                if upper_triangle and d_last <= first_query:
                    continue
                chunk = chunk if chunk is not None else kernel.load_database(d_block)
                qi, dj, sims = kernel.above(q_part, chunk, threshold)
                rows = qi.cpu().numpy() + first_query
                ids = dj.cpu().numpy() + d_start
                sims = sims.cpu().numpy()
                if upper_triangle:
                    keep = ids > rows
                    rows, ids, sims = rows[keep], ids[keep], sims[keep]
                found_rows.append(rows)
                found_ids.append(ids)
                found_sims.append(sims)
    return RangeResult.from_triples(
        queries.num_vectors,
        concat_or_empty(found_rows, np.int64),
        concat_or_empty(found_ids, np.int64),
        concat_or_empty(found_sims, np.float32),
    )

