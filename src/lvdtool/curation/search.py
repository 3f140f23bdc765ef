"""Nearest-neighbour search of many query sets against one database (the pool).

`index: Flat` is exact (chunked matrix products, torch or faiss engine); any other faiss
index_factory string ("IVF65536,PQ64", "IVF1024,Flat") is built once per run, trained on a
sample, and reused for every query set (self-dedup blocks, eval sets, seed sets).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from lvdtool.artifacts.atomic import atomic_path
from lvdtool.errors import ArtifactError, ConfigError
from lvdtool.index import Backend, build_faiss_index, knn_search, search_faiss_index, set_nprobe
from lvdtool.index.faiss_index import to_gpu, train_faiss_index
from lvdtool.index.ivf_parts import add_rows, chunk_share, merge_parts, merge_parts_on_disk, mergeable
from lvdtool.index.vectors import VectorSource, as_source, iter_row_range

EXACT_INDEX = "Flat"


@dataclass
class SearchConfig:
    index: str = EXACT_INDEX  # "Flat" (exact) or a faiss index_factory string
    nprobe: int = 16  # inverted lists visited per query (IVF indices)
    train_sample: int | None = None  # rows to train an IVF/PQ index on (default: faiss_index's rule)
    chunk_rows: int = 32768  # database rows per streamed chunk
    seed: int = 0  # training sample of IVF indices
    merge: str = "memory"  # IVF parts merged in RAM ("memory") or into on-disk lists `index.ivfdata` ("disk")


class IndexRanks(Protocol):
    """What building the index needs of the launch (`stage_ranks.StageRanks` has it)."""

    rank: int
    world_size: int

    def barrier(self) -> None: ...

    def agree(self, value: bool) -> bool: ...

    def on_main(self, fn: Callable[[], Any]) -> Any: ...


class SingleRank:
    rank, world_size = 0, 1

    def barrier(self) -> None:
        pass

    def agree(self, value: bool) -> bool:
        return value

    def on_main(self, fn: Callable[[], Any]) -> Any:
        return fn()


def _write(index: Any, path: Path) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def _read(path: Path) -> Any:
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        raise ArtifactError(f"{path}: stored faiss index unreadable ({str(err).splitlines()[0]}); delete it to rebuild") from None


def _checked_part(path: Path, start: int, stop: int) -> Any:
    part = _read(path)
    if part.ntotal != stop - start:
        raise ArtifactError(f"{path}: index part holds {part.ntotal} vectors, its rows [{start}, {stop}) are "
                            f"{stop - start}; delete it to rebuild")
    return part


class PoolSearcher:
    """k-NN of query sets against a fixed database, with the approximate index built on first use."""

    def __init__(self, database: np.ndarray | VectorSource, config: SearchConfig, backend: Backend) -> None:
        if config.nprobe < 1 or config.chunk_rows < 1:
            raise ConfigError(f"search.nprobe and search.chunk_rows must be >= 1, got {config.nprobe}, {config.chunk_rows}")
        if config.merge not in ("memory", "disk"):
            raise ConfigError(f"search.merge must be memory or disk, got {config.merge!r}")
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

    def load_or_build(self, path: Path, ranks: "IndexRanks | None" = None) -> None:
        """Use the index stored at `path` (under `_work/`), building and storing it first if absent
        (`store`, all ranks of `ranks` together; None: this process alone), then read it, so a rerun
        and every rank search the same trained, filled index. No-op for the exact index."""
        if self.exact:
            return
        import faiss

        self.store(path, ranks)
        try:
            loaded = faiss.read_index(str(path))
        except RuntimeError as err:
            raise ArtifactError(f"{path}: stored faiss index unreadable ({str(err).splitlines()[0]}); delete it to rebuild") from None
        if loaded.ntotal != self.database.num_vectors:
            raise ArtifactError(f"{path}: stored index holds {loaded.ntotal} vectors, the pool {self.database.num_vectors}; "
                                "delete it to rebuild")
        self._built = to_gpu(loaded) if self.backend.faiss_gpu else loaded
        set_nprobe(self._built, self.config.nprobe)

    def store(self, path: Path, ranks: "IndexRanks | None" = None) -> None:
        """Build the index into `path` unless it is there. Rank 0 trains it on the sample
        (`<stem>.trained.faiss`); an IVF index is then filled by every rank with its own consecutive
        rows (`index-part-<r>-of-<W>.faiss`, kept across a kill) and merged by rank 0; any other index
        is filled by rank 0 alone. Files are written atomically; a rerun reuses what is stored."""
        if self.exact:
            return
        ranks = ranks or SingleRank()
        if ranks.agree(path.exists()):
            return
        cfg, work = self.config, path.parent
        trained_path = path.with_name(f"{path.stem}.trained{path.suffix}")

        def train() -> None:
            if not trained_path.exists():
                index = train_faiss_index(self.database, cfg.index, metric="ip", train_sample=cfg.train_sample,
                                          chunk_rows=cfg.chunk_rows, seed=cfg.seed)
                _write(index, trained_path)

        ranks.on_main(train)
        trained = _read(trained_path)
        if not mergeable(trained):
            ranks.on_main(lambda: _write(self._filled(trained, 0, self.database.num_vectors, with_ids=False), path))
            return
        world = ranks.world_size
        part_paths = [work / f"{path.stem}-part-{r}-of-{world}{path.suffix}" for r in range(world)]
        start, stop = chunk_share(self.database.num_vectors, cfg.chunk_rows, ranks.rank, world)
        if not part_paths[ranks.rank].exists():
            _write(self._filled(trained, start, stop), part_paths[ranks.rank])
        del trained
        ranks.barrier()

        def merge() -> None:
            base = _read(trained_path)
            parts = (_checked_part(p, *chunk_share(self.database.num_vectors, cfg.chunk_rows, r, world))
                     for r, p in enumerate(part_paths))
            if cfg.merge == "disk":
                # named by its absolute path inside index.faiss; index.faiss, written last, marks it complete
                lists = path.with_suffix(".ivfdata").resolve()
                merged = merge_parts_on_disk(base, list(parts), lists)
            else:
                merged = merge_parts(base, parts)
            _write(merged, path)
            for p in part_paths:
                p.unlink(missing_ok=True)

        ranks.on_main(merge)

    def _filled(self, trained: Any, start: int, stop: int, with_ids: bool = True) -> Any:
        """A copy of the trained index holding rows [start, stop) under their global row numbers
        (`with_ids`; else added in order from row 0, for indexes without add_with_ids such as HNSW)."""
        import faiss

        index = faiss.clone_index(trained)
        if self.backend.faiss_gpu:
            index = to_gpu(index)
        if with_ids:
            add_rows(index, self.database, start, stop, chunk_rows=self.config.chunk_rows)
        else:
            for _, block in iter_row_range(self.database, start, stop, self.config.chunk_rows):
                index.add(block)
        return faiss.index_gpu_to_cpu(index) if self.backend.faiss_gpu else index

    def search(self, queries: np.ndarray | VectorSource, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(sims float32 [Nq, k], database ids int64 [Nq, k]); missing neighbours are -inf / -1."""
        if self.exact:
            return knn_search(queries, self.database, int(k), metric="ip", chunk_rows=self.config.chunk_rows,
                              backend=self.backend)
        return search_faiss_index(self._index(), as_source(queries), int(k), metric="ip",
                                  chunk_rows=self.config.chunk_rows)
