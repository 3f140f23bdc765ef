"""Restart state under _work/ and the row-subset vector source."""
from __future__ import annotations

import numpy as np

from lvdtool.curation.row_subset import RowSubset
from lvdtool.curation.work_state import WorkState
from lvdtool.index.vectors import ArrayVectors


def test_work_state_round_trip_and_recompute_of_a_broken_file(tmp_path):
    work = WorkState(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(5), "s": np.array(["a", "b"])}, {"n": 5}

    arrays, meta = work.cached("step", compute)
    again, meta2 = WorkState(tmp_path).cached("step", compute)
    assert len(calls) == 1 and meta2 == {"n": 5} and np.array_equal(again["x"], arrays["x"])
    assert again["s"].tolist() == ["a", "b"]
    work.path("step").write_bytes(b"truncated by a kill")
    w3 = WorkState(tmp_path)
    w3.cached("step", compute)
    assert len(calls) == 2 and w3.computed == ["step"]
    assert not list(tmp_path.glob("_work/*.tmp-*"))


class CountingVectors(ArrayVectors):
    def __init__(self, array):
        super().__init__(array)
        self.rows_read = 0

    def iter_chunks(self, chunk_rows):
        for start, block in super().iter_chunks(chunk_rows):
            self.rows_read += len(block)
            yield start, block


def test_row_subset_streams_the_chosen_rows_in_order():
    x = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    rows = np.array([0, 5, 6, 7, 300, 301, 999])
    for chunk in (1, 2, 3, 100):
        got = [(s, b) for s, b in RowSubset(ArrayVectors(x), rows).iter_chunks(chunk)]
        assert [s for s, _ in got] == list(range(0, len(rows), chunk))
        assert np.array_equal(np.concatenate([b for _, b in got]), x[rows])
    early = CountingVectors(np.zeros((200_000, 2), np.float32))
    sub = RowSubset.range(early, 10, 20)
    assert sub.num_vectors == 10 and sum(len(b) for _, b in sub.iter_chunks(4)) == 10
    assert early.rows_read < 200_000  # stops reading after the last wanted row


def test_a_killed_hierarchy_resumes_at_its_first_missing_level(tmp_path):
    """Each level of the balanced subset's hierarchical k-means is a restart unit under _work/."""
    from lvdtool.curation.clustering import HKMeansConfig, KMeansOptions, LevelConfig, balanced_subset, kmeans_config

    rng = np.random.default_rng(2)
    centres = rng.standard_normal((12, 8))
    x = centres[rng.integers(0, 12, 900)] + 0.2 * rng.standard_normal((900, 8))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    options = HKMeansConfig(target=120, levels=[LevelConfig(24, 1, 3), LevelConfig(6, 1, 2)])
    km = kmeans_config(KMeansOptions(n_iter=5), "torch", "cpu", "auto", 256)
    first = balanced_subset(ArrayVectors(x), options, km, WorkState(tmp_path), seed=0)
    work_dir = tmp_path / "_work"
    level0 = (work_dir / "hierarchy-level0.npz").stat().st_mtime_ns
    (work_dir / "hierarchy.npz").unlink()  # killed while fitting level 1
    (work_dir / "hierarchy-level1.npz").unlink()
    work = WorkState(tmp_path)
    again = balanced_subset(ArrayVectors(x), options, km, work, seed=0)
    assert "hierarchy-level0" in work.reused and "hierarchy-level1" in work.computed
    assert (work_dir / "hierarchy-level0.npz").stat().st_mtime_ns == level0
    assert np.array_equal(again.pool_rows, first.pool_rows) and len(first.pool_rows) == 120
