"""The split of a hierarchical k-means level (n_splits > 1): coarse k-means, then each coarse
cluster clustered into sub-clusters, in batches that are restart units."""

import tracemalloc

import numpy as np
import pytest

from lvdtool.curation.work_state import WorkState
from lvdtool.errors import ConfigError
from lvdtool.index import KMeansConfig, LevelSpec, hierarchical_kmeans
from lvdtool.index.hkmeans import _cluster_level
from lvdtool.index.vectors import ArrayVectors
from lvdtool.index.hkmeans_split import split_batches, split_level


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


CONFIG = KMeansConfig(n_iter=10, seed=0, chunk_rows=512, engine="torch", device="cpu")
BLOBS, SUBS, PER_SUB = 20, 3, 40


@pytest.fixture(scope="module")
def sub_blobs():
    """20 well-separated blobs, each made of 3 tighter sub-blobs: sub-blob id of every row."""
    rng = np.random.default_rng(5)
    centres = unit_rows(rng.standard_normal((BLOBS, 32)))
    subs = unit_rows(np.repeat(centres, SUBS, axis=0) + 0.25 * unit_rows(rng.standard_normal((BLOBS * SUBS, 32))))
    truth = rng.permutation(np.repeat(np.arange(BLOBS * SUBS), PER_SUB))
    x = unit_rows(subs[truth] + 0.01 * rng.standard_normal((len(truth), 32)))
    return x, truth


def _work_store(work: WorkState):
    def store(name, fit):
        keys = ("centroids", "assignment", "similarity")
        arrays, _ = work.cached(name, lambda: (dict(zip(keys, fit())), {}))
        return tuple(arrays[k] for k in keys)
    return store


def test_one_split_is_todays_level_exactly(sub_blobs):
    x, _ = sub_blobs
    h = hierarchical_kmeans(x, [LevelSpec(30, 2, 4, n_splits=1), LevelSpec(6, 1, 2, n_splits=1)], CONFIG)
    # today's recipe, by hand: one k-means (+ resampling) per level, seeds seed + 1000 * level
    c0, a0, s0 = _cluster_level(ArrayVectors(x), LevelSpec(30, 2, 4), CONFIG, 0)
    c1, a1, s1 = _cluster_level(ArrayVectors(c0), LevelSpec(6, 1, 2), CONFIG, 1000)
    for got, want in zip((h.centroids[0], h.assignments[0], h.similarities[0], h.centroids[1], h.assignments[1]),
                         (c0, a0, s0, c1, a1)):
        assert got.tobytes() == want.tobytes()
    assert h.similarities[1].tobytes() == s1.tobytes()


def test_a_split_level_finds_the_planted_sub_blobs(sub_blobs):
    x, truth = sub_blobs
    h = hierarchical_kmeans(x, [LevelSpec(BLOBS * SUBS, n_splits=SUBS), LevelSpec(5)], CONFIG, split_batch_rows=500)
    labels = h.assignments[0]
    assert len(h.centroids[0]) == BLOBS * SUBS and labels.max() == BLOBS * SUBS - 1
    sizes = h.sizes(0)
    assert sizes.sum() == len(x) and sizes.min() > 0
    # every split cluster is pure: one sub-blob, and all of it
    pairs = np.unique(np.stack([labels, truth]), axis=1)
    assert pairs.shape[1] == BLOBS * SUBS
    np.testing.assert_array_equal(sizes, PER_SUB)
    np.testing.assert_allclose(np.linalg.norm(h.centroids[0], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(h.similarities[0], np.sum(x * h.centroids[0][labels], axis=1), atol=1e-5)
    assert h.assignments[1].shape == (BLOBS * SUBS,) and h.sizes(1).sum() == len(x)  # split centroids feed level 1


def test_sub_clusters_are_capped_by_the_coarse_cluster_size():
    x = unit_rows(np.random.default_rng(1).standard_normal((40, 8)))
    coarse = np.repeat([0, 1, 2, 3], [1, 2, 7, 30])
    centroids, labels, sims = split_level(x, coarse, 4, 5, CONFIG, 0, batch_rows=10)
    assert len(centroids) <= 1 + 2 + 5 + 5 and np.bincount(labels).min() > 0
    assert labels[0] == 0 and set(labels[1:3]) <= {1, 2}  # sub-clusters in coarse-cluster order
    np.testing.assert_array_equal(split_batches(np.array([1, 2, 7, 30]), 10), [0, 3, 4])


def test_a_killed_split_resumes_at_its_first_missing_batch(tmp_path, sub_blobs, stream_only):
    x, _ = sub_blobs
    levels = [LevelSpec(BLOBS * SUBS, 1, 2, n_splits=SUBS)]
    whole = hierarchical_kmeans(x, levels, CONFIG, unit_store=_work_store(WorkState(tmp_path / "whole")),
                                split_batch_rows=400)
    work = WorkState(tmp_path / "killed")
    store, computed = _work_store(work), []

    def dying(name, fit):
        if name.startswith("level0-split") and len(computed) == 2 and not work.exists(name):
            raise KeyboardInterrupt("killed")
        out = store(name, fit)
        computed.append(name)
        return out

    with pytest.raises(KeyboardInterrupt):
        hierarchical_kmeans(stream_only(x), levels, CONFIG, unit_store=dying, split_batch_rows=400)
    done = sorted(p.name for p in work.dir.glob("level0-*.npz"))
    assert done == ["level0-coarse.npz", "level0-split00000.npz"]
    mtimes = {n: (work.dir / n).stat().st_mtime_ns for n in done}
    again_work = WorkState(tmp_path / "killed")
    again = hierarchical_kmeans(stream_only(x), levels, CONFIG, unit_store=_work_store(again_work),
                                split_batch_rows=400)
    assert again_work.reused == ["level0-coarse", "level0-split00000"]
    assert len(again_work.computed) == len(list(work.dir.glob("level0-split*.npz"))) - 1 >= 3
    assert {n: (work.dir / n).stat().st_mtime_ns for n in done} == mtimes
    for got, want in ((again.centroids[0], whole.centroids[0]), (again.assignments[0], whole.assignments[0]),
                      (again.similarities[0], whole.similarities[0])):
        assert got.tobytes() == want.tobytes()


def test_split_memory_per_row_is_bounded():
    """Peak numpy memory of the split beyond one batch: order int64 + labels int64 + similarity
    float32 (+ argsort scratch) = about 24 B/row, never N x n_clusters."""
    config = KMeansConfig(n_iter=2, seed=0, chunk_rows=512, engine="torch", device="cpu")
    peaks = {}
    for n in (20_000, 60_000):
        x = unit_rows(np.random.default_rng(n).standard_normal((n, 8)))
        coarse = np.random.default_rng(1).integers(0, 10, n)
        tracemalloc.start()
        split_level(x, coarse, 10, 4, config, 0, batch_rows=6_000)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    per_row = (peaks[60_000] - peaks[20_000]) / 40_000
    print(f"split: {per_row:.1f} B/row")
    assert 20 <= per_row <= 40


def test_n_splits_must_divide_n_clusters():
    from lvdtool.curation.clustering import HKMeansConfig, LevelConfig, balanced_subset
    x = unit_rows(np.random.default_rng(0).standard_normal((50, 4)))
    with pytest.raises(ConfigError, match=r"^levels\[0\]\.n_splits: 3 does not divide n_clusters 10$"):
        hierarchical_kmeans(x, [LevelSpec(10, n_splits=3)], CONFIG)
    with pytest.raises(ConfigError, match=r"^hkmeans\.levels\[1\]\.n_splits: must be an integer >= 1, got 0$"):
        balanced_subset(ArrayVectors(x), HKMeansConfig(target=5, levels=[LevelConfig(10), LevelConfig(4, n_splits=0)]), CONFIG,
                        None, 0)


def test_the_balanced_subset_stores_split_batches_under_work(tmp_path, sub_blobs):
    from lvdtool.curation.clustering import HKMeansConfig, LevelConfig, balanced_subset
    x, _ = sub_blobs
    options = HKMeansConfig(target=200, levels=[LevelConfig(BLOBS * SUBS, n_splits=SUBS), LevelConfig(6)],
                            split_batch_rows=600)
    first = balanced_subset(ArrayVectors(x), options, CONFIG, WorkState(tmp_path), seed=0)
    work_dir = tmp_path / "_work"
    batches = sorted(work_dir.glob("hierarchy-level0-split*.npz"))
    assert len(batches) == 4 and (work_dir / "hierarchy-level0-coarse.npz").exists()
    for name in ("hierarchy.npz", "hierarchy-level0.npz", "hierarchy-level1.npz", batches[2].name):
        (work_dir / name).unlink()  # killed while splitting batch 2
    work = WorkState(tmp_path)
    again = balanced_subset(ArrayVectors(x), options, CONFIG, work, seed=0)
    assert work.computed == ["hierarchy-level0-split00002", "hierarchy-level0", "hierarchy-level1", "hierarchy"]
    assert np.array_equal(again.pool_rows, first.pool_rows) and len(first.pool_rows) == 200
