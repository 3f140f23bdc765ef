"""Approximate search with a faiss index built from an index_factory string.

Scale path: "IVF<nlist>,PQ<m>" stores m bytes per vector (plus an 8-byte id), so 10^9
vectors of any dimension with PQ64 take ~72 GB; train on a sample (default max(64 x nlist,
65,536) rows), then add the database chunk by chunk, so only one chunk is ever held as
float32 (on W ranks each fills its own rows and the parts are merged: `ivf_parts.py`). Larger
still: build one index per database shard (or per rank), search each with ids offset to global
rows and merge with `topk.merge_topk`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lvdtool.errors import ConfigError, InputError
from lvdtool.index.exact import iter_prepared
from lvdtool.index.range_result import RangeResult, concat_or_empty
from lvdtool.index.topk import sort_neighbours
from lvdtool.index.vectors import VectorSource, gather_rows, l2_normalize

MIN_TRAIN_ROWS = 65536
TRAIN_ROWS_PER_LIST = 64


def to_gpu(index: Any) -> Any:
    """Copy a CPU index to all GPUs faiss sees (faiss-gpu only)."""
    import faiss

    return faiss.index_cpu_to_all_gpus(index)


def _ivf_of(index: Any) -> Any | None:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def default_train_rows(index: Any, num_vectors: int) -> int:
    ivf = _ivf_of(index)
    nlist = ivf.nlist if ivf is not None else 0
    return min(num_vectors, max(MIN_TRAIN_ROWS, TRAIN_ROWS_PER_LIST * nlist))


def train_faiss_index(
    database: VectorSource,
    factory: str,
    *,
    metric: str = "ip",
    train_sample: int | None = None,
    chunk_rows: int,
    seed: int = 0,
) -> Any:
    """Create `factory` (e.g. "IVF4096,PQ64") on the CPU and train it on a random sample: still empty."""
    import faiss

    try:
        index = faiss.index_factory(database.dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ConfigError(f"index: faiss cannot build {factory!r}: {str(err).splitlines()[0]}") from err
    ivf = _ivf_of(index)
    if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
        # On by default for IVF-PQ; only serves Hamming pre-filtering, which we never enable,
        # and it made training 20x slower (18 s for 4k vectors here).
        faiss.downcast_index(ivf).do_polysemous_training = False
    if ivf is not None and ivf.nlist > database.num_vectors:
        raise InputError(f"index: {factory!r} has {ivf.nlist} lists but the database has {database.num_vectors} rows")
    if not index.is_trained:
        rows = train_sample if train_sample is not None else default_train_rows(index, database.num_vectors)
        rows = min(int(rows), database.num_vectors)
        picked = np.sort(np.random.default_rng(seed).choice(database.num_vectors, size=rows, replace=False))
        sample = gather_rows(database, picked, chunk_rows)
        index.train(l2_normalize(sample) if metric == "cosine" else sample)
    return index


def build_faiss_index(
    database: VectorSource,
    factory: str,
    *,
    metric: str = "ip",
    train_sample: int | None = None,
    chunk_rows: int,
    seed: int = 0,
    use_gpu: bool = False,
) -> Any:
    """Create `factory` (e.g. "IVF4096,PQ64"), train it on a random sample, add all rows in chunks."""
    index = train_faiss_index(database, factory, metric=metric, train_sample=train_sample, chunk_rows=chunk_rows,
                              seed=seed)
    if use_gpu:
        index = to_gpu(index)
    for _, block in iter_prepared(database, chunk_rows, metric):
        index.add(block)
    return index


def set_nprobe(index: Any, nprobe: int) -> None:
    """Number of inverted lists visited per query (recall/speed knob of IVF indices)."""
    import faiss

    ivf = _ivf_of(index)
    if ivf is not None:
        ivf.nprobe = int(nprobe)
    elif hasattr(faiss, "GpuParameterSpace") and "Gpu" in type(index).__name__:
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", int(nprobe))


def search_faiss_index(
    index: Any, queries: VectorSource, k: int, *, metric: str = "ip", chunk_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN of every query row against a built index, queries streamed in chunks."""
    sims = np.empty((queries.num_vectors, k), dtype=np.float32)
    ids = np.empty((queries.num_vectors, k), dtype=np.int64)
    for start, block in iter_prepared(queries, chunk_rows, metric):
        block_sims, block_ids = index.search(block, k)
        # faiss pads missing results with -3.4e38 / -1; use the -inf convention.
        block_sims[block_ids < 0] = -np.inf
        sims[start : start + len(block)] = block_sims
        ids[start : start + len(block)] = block_ids
    return sort_neighbours(sims, ids)


def range_search_faiss_index(
    index: Any, queries: VectorSource, threshold: float, *, metric: str = "ip", chunk_rows: int
) -> RangeResult:
    rows, ids, sims = [], [], []
    for start, block in iter_prepared(queries, chunk_rows, metric):
        lims, block_sims, block_ids = index.range_search(block, float(threshold))
        rows.append(np.repeat(np.arange(start, start + len(block), dtype=np.int64), np.diff(lims.astype(np.int64))))
        ids.append(block_ids.astype(np.int64))
        sims.append(block_sims.astype(np.float32))
    return RangeResult.from_triples(
        queries.num_vectors,
        concat_or_empty(rows, np.int64),
        concat_or_empty(ids, np.int64),
        concat_or_empty(sims, np.float32),
    )
