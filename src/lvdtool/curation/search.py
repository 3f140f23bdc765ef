"""Nearest-neighbour search of many query sets against one database (the pool).

`index: Flat` is exact (chunked matrix products, torch or faiss engine); any other faiss
index_factory string ("IVF65536,PQ64", "IVF1024,Flat") is built once per run, trained on a
sample, and reused for every query set (self-dedup blocks, eval sets, seed sets).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lvdtool.artifacts.atomic import atomic_path
from lvdtool.errors import ArtifactError, ConfigError
from lvdtool.index import Backend, build_faiss_index, knn_search, search_faiss_index, set_nprobe
from lvdtool.index.faiss_index import to_gpu
from lvdtool.index.vectors import VectorSource, as_source

EXACT_INDEX = "Flat"


@dataclass
class SearchConfig:
    index: str = EXACT_INDEX  # "Flat" (exact) or a faiss index_factory string
    nprobe: int = 16  # inverted lists visited per query (IVF indices)
    train_sample: int | None = None  # rows to train an IVF/PQ index on (default: faiss_index's rule)
    chunk_rows: int = 32768  # database rows per streamed chunk
    seed: int = 0  # training sample of IVF indices


class PoolSearcher:
    """k-NN of query sets against a fixed database, with the approximate index built on first use."""

    def __init__(self, database: np.ndarray | VectorSource, config: SearchConfig, backend: Backend) -> None:
        if config.nprobe < 1 or config.chunk_rows < 1:
            raise ConfigError(f"search.nprobe and search.chunk_rows must be >= 1, got {config.nprobe}, {config.chunk_rows}")
        if config.index != EXACT_INDEX and backend.engine == "torch" and backend.engine_forced:
            raise ConfigError(f"search.index={config.index!r} is a faiss index; use engine=faiss or auto (torch runs only Flat)")
        self.database = as_source(database, "pool")
        self.config = config
        self.backend = backend
        self._built: Any = None

    @property
    def exact(self) -> bool:
        return self.config.index == EXACT_INDEX

    def _index(self) -> Any:
        if self._built is None:
            self._built = build_faiss_index(
                self.database, self.config.index, metric="ip", train_sample=self.config.train_sample,
                chunk_rows=self.config.chunk_rows, seed=self.config.seed, use_gpu=self.backend.faiss_gpu,
            )
            set_nprobe(self._built, self.config.nprobe)
        return self._built

    def load_or_build(self, path: Path, on_main: Callable[[Callable[[], None]], None]) -> None:
        """Use the index stored at `path` (under `_work/`), building and storing it first if absent:
        `on_main` runs the build on rank 0 only, then every rank reads the same file, so a rerun and
        every rank search the same trained, filled index. No-op for the exact index."""
        if self.exact:
            return
        import faiss

        def build() -> None:
            if path.exists():
                return
            index = self._index()
            cpu = faiss.index_gpu_to_cpu(index) if "Gpu" in type(index).__name__ else index
            with atomic_path(path) as tmp:
                faiss.write_index(cpu, str(tmp))

        on_main(build)
        try:
            loaded = faiss.read_index(str(path))
        except RuntimeError as err:
            raise ArtifactError(f"{path}: stored faiss index unreadable ({str(err).splitlines()[0]}); delete it to rebuild") from None
        if loaded.ntotal != self.database.num_vectors:
            raise ArtifactError(f"{path}: stored index holds {loaded.ntotal} vectors, the pool {self.database.num_vectors}; "
                                "delete it to rebuild")
        self._built = to_gpu(loaded) if self.backend.faiss_gpu else loaded
        set_nprobe(self._built, self.config.nprobe)

    def search(self, queries: np.ndarray | VectorSource, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(sims float32 [Nq, k], database ids int64 [Nq, k]); missing neighbours are -inf / -1."""
        if self.exact:
            return knn_search(queries, self.database, int(k), metric="ip", chunk_rows=self.config.chunk_rows,
                              backend=self.backend)
        return search_faiss_index(self._index(), as_source(queries), int(k), metric="ip",
                                  chunk_rows=self.config.chunk_rows)
