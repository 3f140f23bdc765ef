"""A synthetic embeddings artifact at scale-test size: random unit vectors with planted copy groups.

Groups of 2-4 near-copies (noise 0.05 on a unit vector in 32-d: cosine ~0.96 within a group,
distinct rows ~0 apart) are spread over all shards, so components cross shard boundaries; an eval
set holds near-copies of a few pool rows (contamination) and fresh vectors. Keys are zero-padded
row numbers, unique and in row order, as crawl-ingest keys are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lvdtool.artifacts import Manifest
from lvdtool.artifacts.embeddings import embeddings_table


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings(path: Path, vectors: np.ndarray, shards: int, prefix: str = "") -> Path:
    """`vectors` as an embeddings artifact of `shards` near-equal shards (keys `<prefix><row:09d>`)."""
    (path / "shards").mkdir(parents=True)
    bounds = np.linspace(0, len(vectors), shards + 1).astype(np.int64)
    entries = []
    for s in range(shards):
        name = f"shard-{s:06d}"
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        keys = [f"{prefix}{i:09d}" for i in range(lo, hi)]
        pq.write_table(embeddings_table(keys, vectors[lo:hi].astype(np.float16)), path / "shards" / f"{name}.parquet")
        entries.append({"name": name, "rows": hi - lo, "bytes": 0, "checksum": f"{path.name}{s}", "files": []})
    Manifest(kind="embeddings", stage="test", config={}, shards=entries, extra={"dim": int(vectors.shape[1]), "images": None},
             complete=True).write(path)
    return path


@dataclass
class PlantedPool:
    pool: Path
    eval: Path
    groups: np.ndarray  # int64 planted group of each pool row (-1: no copy planted)
    contaminated: np.ndarray  # pool rows with a near-copy in the eval set


def planted_pool(root: Path, rows: int = 20_000, shards: int = 200, dim: int = 32, seed: int = 0) -> PlantedPool:
    rng = np.random.default_rng(seed)
    base = unit_rows(rng.standard_normal((rows, dim)))
    groups = np.full(rows, -1, np.int64)
    order = rng.permutation(rows)
    at, g = 0, 0
    while at < rows // 5:  # a fifth of the rows are copies of another row
        size = int(rng.integers(2, 5))
        members = order[at:at + size]
        base[members[1:]] = unit_rows(base[members[0]] + 0.05 * rng.standard_normal((len(members) - 1, dim)))
        groups[members] = g
        at, g = at + size, g + 1
    contaminated = np.sort(order[rows // 5: rows // 5 + 40])
    eval_vectors = np.concatenate([unit_rows(base[contaminated] + 0.05 * rng.standard_normal((40, dim))),
                                   unit_rows(rng.standard_normal((60, dim)))])
    pool = write_embeddings(root / "pool", base, shards)
    evalset = write_embeddings(root / "eval", eval_vectors, 2, prefix="e")
    return PlantedPool(pool, evalset, groups, contaminated)
