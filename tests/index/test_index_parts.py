"""An IVF index filled by 3 real gloo ranks (one part each) and merged against one process's build."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.artifacts.ranks import RankInfo
from lvdtool.curation.search import PoolSearcher, SearchConfig
from lvdtool.curation.stage_ranks import StageRanks
from lvdtool.index import build_faiss_index, search_faiss_index, select_backend, set_nprobe
from lvdtool.index.ivf_parts import chunk_share
from lvdtool.index.vectors import ArrayVectors, iter_row_range

WORLD = 3
ROWS, DIM, CHUNK = 2000, 16, 96  # 21 chunks: rank shares of 7 chunks, the last one short
FACTORIES = {"ivf_flat": "IVF16,Flat", "ivf_pq": "IVF16,PQ4"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((12, DIM))
    x = centres[rng.integers(0, 12, ROWS)] + 0.3 * rng.standard_normal((ROWS, DIM))
    x[1500:1540] = x[100:140]  # exact copies across rank shares: tied distances
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    return x, x[::13].copy()


def _config(factory: str) -> SearchConfig:
    return SearchConfig(index=factory, nprobe=4, train_sample=800, chunk_rows=CHUNK, seed=2)


def _searcher(factory: str) -> PoolSearcher:
    return PoolSearcher(ArrayVectors(_data()[0]), _config(factory), select_backend("cpu", "faiss"))


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        ranks = StageRanks(RankInfo(rank, world, "parts-test"), owns_group=False)
        for name, factory in FACTORIES.items():
            work = Path(folder) / name
            searcher = _searcher(factory)
            searcher.store(work / "index.faiss", ranks)
            np.save(work / f"kept-{rank}.npy", np.array([p.name for p in sorted(work.glob("index-part-*"))]))
    finally:
        dist.destroy_process_group()


def _single(factory: str) -> tuple[np.ndarray, np.ndarray]:
    x, queries = _data()
    cfg = _config(factory)
    index = build_faiss_index(ArrayVectors(x), factory, train_sample=cfg.train_sample, chunk_rows=CHUNK, seed=cfg.seed)
    set_nprobe(index, cfg.nprobe)
    return search_faiss_index(index, ArrayVectors(queries), 10, chunk_rows=CHUNK)


def _merged(path: Path, factory: str) -> tuple[np.ndarray, np.ndarray]:
    searcher = _searcher(factory)
    searcher.load_or_build(path)
    return searcher.search(_data()[1], 10)


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("parts")
    for name in FACTORIES:
        (folder / name).mkdir()
    mp.spawn(_worker, args=(WORLD, _free_port(), str(folder)), nprocs=WORLD, join=True)
    return folder


@pytest.mark.parametrize("name", list(FACTORIES))
def test_three_ranks_merged_search_equals_one_process(three_ranks, name):
    factory = FACTORIES[name]
    work = three_ranks / name
    assert (work / "index.trained.faiss").exists()
    assert not list(work.glob("index-part-*"))  # merged parts are removed
    sims, ids = _merged(work / "index.faiss", factory)
    single_sims, single_ids = _single(factory)
    np.testing.assert_array_equal(ids, single_ids)
    np.testing.assert_array_equal(sims, single_sims)
    assert (ids >= 0).all() and len(np.unique(ids)) > 100
    # the inverted lists hold the same ids in the same order
    merged_index = faiss.read_index(str(work / "index.faiss"))  # held: extract_index_ivf does not own
    one_index = build_faiss_index(ArrayVectors(_data()[0]), factory, train_sample=800, chunk_rows=CHUNK, seed=2)
    merged, one = faiss.extract_index_ivf(merged_index), faiss.extract_index_ivf(one_index)
    for lst in range(merged.nlist):
        got = faiss.rev_swig_ptr(merged.invlists.get_ids(lst), merged.invlists.list_size(lst))
        want = faiss.rev_swig_ptr(one.invlists.get_ids(lst), one.invlists.list_size(lst))
        np.testing.assert_array_equal(got, want)


def _part(searcher: PoolSearcher, trained: Path, rank: int, path: Path) -> None:
    start, stop = chunk_share(searcher.database.num_vectors, CHUNK, rank, WORLD)
    faiss.write_index(searcher._filled(faiss.read_index(str(trained)), start, stop), str(path))


class _Rank:
    """One rank of a W-rank launch run alone (the others' parts already stored): what a rerun sees."""

    def __init__(self, rank: int) -> None:
        self.rank, self.world_size = rank, WORLD

    def barrier(self) -> None:
        pass

    def agree(self, value: bool) -> bool:
        return value

    def on_main(self, fn):
        return fn() if self.rank == 0 else None


def test_part_of_a_killed_run_is_reused_and_merge_is_identical(three_ranks, tmp_path):
    factory = FACTORIES["ivf_pq"]
    searcher = _searcher(factory)
    trained = tmp_path / "index.trained.faiss"
    trained.write_bytes((three_ranks / "ivf_pq" / "index.trained.faiss").read_bytes())
    parts = [tmp_path / f"index-part-{r}-of-{WORLD}.faiss" for r in range(WORLD)]
    for r in (1, 2):  # ranks 1 and 2 finished their parts before the kill; rank 0 had not
        _part(searcher, trained, r, parts[r])
    stamps = {r: parts[r].stat().st_mtime_ns for r in (1, 2)}
    for r in (1, 2):  # the rerun: ranks 1 and 2 find their parts and skip them (rank 0 merges)
        searcher.store(tmp_path / "index.faiss", _Rank(r))
        assert parts[r].stat().st_mtime_ns == stamps[r]
    assert not parts[0].exists() and not (tmp_path / "index.faiss").exists()
    searcher.store(tmp_path / "index.faiss", _Rank(0))  # rank 0 adds its share, then merges all three
    assert (tmp_path / "index.faiss").read_bytes() == (three_ranks / "ivf_pq" / "index.faiss").read_bytes()


def test_a_rank_holds_only_its_own_share(three_ranks, tmp_path):
    factory = FACTORIES["ivf_pq"]
    searcher = _searcher(factory)
    trained = three_ranks / "ivf_pq" / "index.trained.faiss"
    shares = [chunk_share(ROWS, CHUNK, r, WORLD) for r in range(WORLD)]
    assert shares[0][0] == 0 and shares[-1][1] == ROWS and all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
    assert all(start % CHUNK == 0 for start, _ in shares)
    trained_index = faiss.read_index(str(trained))
    code_size = faiss.extract_index_ivf(trained_index).code_size
    for r, (start, stop) in enumerate(shares):
        part = searcher._filled(faiss.read_index(str(trained)), start, stop)
        ivf = faiss.extract_index_ivf(part)
        ids = np.concatenate([faiss.rev_swig_ptr(ivf.invlists.get_ids(i), ivf.invlists.list_size(i))
                              for i in range(ivf.nlist)])
        assert part.ntotal == stop - start == len(ids)
        assert ids.min() >= start and ids.max() < stop
        # a rank's copy = the trained index + (code_size + 8-byte id) per row of its share, nothing more
        faiss.write_index(part, str(tmp_path / f"part{r}.faiss"))
        extra = (tmp_path / f"part{r}.faiss").stat().st_size - trained.stat().st_size
        assert (stop - start) * (code_size + 8) <= extra <= (stop - start) * (code_size + 8) + 16 * ivf.nlist


def test_disk_merge_searches_like_one_process(three_ranks, tmp_path):
    factory = FACTORIES["ivf_flat"]
    searcher = _searcher(factory)
    searcher.config.merge = "disk"
    trained = tmp_path / "index.trained.faiss"
    trained.write_bytes((three_ranks / "ivf_flat" / "index.trained.faiss").read_bytes())
    for r in range(1, WORLD):
        _part(searcher, trained, r, tmp_path / f"index-part-{r}-of-{WORLD}.faiss")
    searcher.store(tmp_path / "index.faiss", _Rank(0))
    assert (tmp_path / "index.ivfdata").stat().st_size > 0
    sims, ids = _merged(tmp_path / "index.faiss", factory)
    single_sims, single_ids = _single(factory)
    np.testing.assert_array_equal(ids, single_ids)
    np.testing.assert_array_equal(sims, single_sims)


def test_non_ivf_index_is_filled_on_rank_0(tmp_path):
    searcher = _searcher("HNSW8")
    searcher.load_or_build(tmp_path / "index.faiss")
    assert not list(tmp_path.glob("index-part-*"))
    sims, ids = searcher.search(_data()[1], 5)
    assert ids.shape == (len(_data()[1]), 5) and (ids[:, 0] == np.arange(0, ROWS, 13)).mean() > 0.9


@pytest.mark.parametrize("start,stop", [(0, 2000), (96, 480), (1920, 2000), (500, 1003)])
def test_row_range_of_a_stream_only_source_matches_slicing(start, stop, stream_only):
    x = _data()[0]
    for source in (stream_only(x), ArrayVectors(x)):
        got = list(iter_row_range(source, start, stop, CHUNK))
        assert [at for at, _ in got] == list(range(start, stop, CHUNK))
        np.testing.assert_array_equal(np.concatenate([b for _, b in got]), x[start:stop])


def test_row_range_of_an_embeddings_artifact_reads_only_its_rows(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "curation"))
    from planted_pool import write_embeddings

    x = _data()[0][:700]
    art = EmbeddingsArtifact(write_embeddings(tmp_path / "emb", x, 7))  # 100-row shards
    read: list[str] = []
    original = art.read_shard
    art.read_shard = lambda shard: (read.append(shard), original(shard))[1]
    got = list(iter_row_range(art, 250, 430, 64))
    assert [at for at, _ in got] == [250, 314, 378]
    np.testing.assert_array_equal(np.concatenate([b for _, b in got]), x[250:430])
    assert read == art.shards[2:5]
