"""Relative deduplication against evaluation sets: pool components that touch an eval image go.

For every image of a benchmark its k nearest pool images are found; pool images above the
threshold touch the benchmark, and so does their whole near-duplicate component (DINOv2:
threshold 0.45, whole components discarded). A component touching several benchmarks is
attributed to the first one in the order given; per-benchmark counts include overlaps.
"""
from __future__ import annotations

from dataclasses import dataclass
import re
from pathlib import Path

import numpy as np

from lvdtool.curation.duplicate_graph import Pairs
from lvdtool.curation.search import PoolSearcher
from lvdtool.errors import ConfigError
from lvdtool.index.vectors import VectorSource


@dataclass(frozen=True)
class Benchmark:
    name: str
    path: str


def parse_against(specs: list[str]) -> list[Benchmark]:
    """"NAME=PATH" or "PATH" (the name is the folder name); names must be unique."""
    out: list[Benchmark] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/")).name, spec
        if not path or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"against: {spec!r} is not NAME=PATH or PATH (names use letters, digits, _ . -)")
        if any(b.name == name for b in out):
            raise ConfigError(f"against: benchmark name {name!r} given twice (use NAME=PATH to tell them apart)")
        out.append(Benchmark(name=name, path=path))
    return out


def eval_pool_pairs(searcher: PoolSearcher, eval_vectors: VectorSource, k: int, keep_above: float) -> Pairs:
    """(eval row, pool row, sim) for the k nearest pool images of every eval image, above `keep_above`."""
    k_eff = min(int(k), searcher.database.num_vectors)
    sims, ids = searcher.search(eval_vectors, k_eff)
    rows = np.broadcast_to(np.arange(len(ids), dtype=np.int64)[:, None], ids.shape)
    keep = (sims > keep_above) & (ids >= 0)
    return Pairs(rows[keep].astype(np.int64), ids[keep].astype(np.int64), sims[keep].astype(np.float32))


def touched_components(labels: np.ndarray, pool_rows: np.ndarray) -> np.ndarray:
    """Boolean per component: holds one of `pool_rows`."""
    hit = np.zeros(int(labels.max()) + 1 if labels.size else 0, dtype=bool)
    hit[labels[pool_rows]] = True
    return hit
