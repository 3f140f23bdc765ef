"""An IVF index filled in parts (one per rank) and merged by joining its inverted lists.

Rank r adds the rows of its share, contiguous and starting on a multiple of chunk_rows, into a copy of
one trained (empty) index, with ids = global row numbers. Each row's list and code depend only on the
trained quantizer and the row, and faiss is called on the same chunks as a single-process build (so
the same BLAS/batch paths); merging parts in rank order appends each part's entries to every list
after the previous part's, so every list holds the same ids, codes and order as adding all rows in
order on one process: searches (ties included) give the same ids and distances.

Only IVF indexes with plain inverted lists merge this way ("IVF…,Flat", "IVF…,PQm", "IVF…,SQ8",
optionally behind a transform such as "PCA64,IVF…"); others (Flat, HNSW, fast-scan, refine) are
filled in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from lvdtool.errors import ArtifactError
from lvdtool.index.vectors import VectorSource, iter_row_range, l2_normalize


def chunk_share(num_vectors: int, chunk_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, stop) of `rank`: consecutive whole chunks of chunk_rows rows, about equal per rank."""
    chunks = -(-int(num_vectors) // int(chunk_rows))
    first, stop = chunks * rank // world_size, chunks * (rank + 1) // world_size
    return min(first * chunk_rows, num_vectors), min(stop * chunk_rows, num_vectors)


def _ivf_layer(index: Any) -> Any | None:
    """The IndexIVF inside `index` when its lists can be merged (itself or behind a transform)."""
    import faiss

    outer = faiss.downcast_index(index)
    inner = faiss.downcast_index(outer.index) if isinstance(outer, faiss.IndexPreTransform) else outer
    if not isinstance(inner, faiss.IndexIVF):
        return None
    if not isinstance(faiss.downcast_InvertedLists(inner.invlists), faiss.ArrayInvertedLists):
        return None
    return inner


def mergeable(index: Any) -> bool:
    return _ivf_layer(index) is not None


def add_rows(index: Any, database: VectorSource, start: int, stop: int, *, chunk_rows: int, metric: str = "ip") -> None:
    """Add database rows [start, stop) to `index` under their global row numbers."""
    for at, block in iter_row_range(database, start, stop, chunk_rows):
        block = l2_normalize(block) if metric == "cosine" else block
        index.add_with_ids(block, np.arange(at, at + len(block), dtype=np.int64))


def merge_parts(trained: Any, parts: Iterable[Any]) -> Any:
    """`trained` (empty) with the lists of every part appended in order; each part is emptied as it
    goes, so memory peaks at the merged index plus one part."""
    target = _ivf_layer(trained)
    if target is None or trained.ntotal:
        raise ArtifactError("index parts: merge needs an empty, trained IVF index")
    for part in parts:
        source = _ivf_layer(part)
        if source is None:
            raise ArtifactError("index parts: a part is not an IVF index with plain inverted lists")
        target.merge_from(source, 0)
    trained.ntotal = target.ntotal
    return trained


def merge_parts_on_disk(trained: Any, parts: list[Any], lists_path: Path) -> Any:
    """Like `merge_parts`, but the merged lists go to `lists_path` (faiss OnDiskInvertedLists, read
    back memory-mapped): the index file then holds only the quantizer and codebooks. The parts
    must all be open at once (their lists are copied list by list)."""
    import faiss

    target = _ivf_layer(trained)
    sources = [_ivf_layer(p) for p in parts]
    if target is None or trained.ntotal or any(s is None for s in sources):
        raise ArtifactError("index parts: on-disk merge needs an empty trained IVF index and IVF parts")
    lists = faiss.InvertedListsPtrVector()
    for s in sources:
        lists.push_back(s.invlists)
    on_disk = faiss.OnDiskInvertedLists(target.nlist, target.code_size, str(lists_path))
    total = on_disk.merge_from_multiple(lists.data(), lists.size(), False, False)
    target.ntotal = total
    target.replace_invlists(on_disk, True)
    on_disk.this.disown()  # owned by the index now
    trained.ntotal = total
    return trained
