import numpy as np
import pytest

from lvdtool.errors import ConfigError, InputError
from lvdtool.index import Hierarchy, KMeansConfig, LevelSpec, balanced_sample, hierarchical_kmeans
from lvdtool.index.selection import take_per_cluster, waterfill, waterfill_groups

MODES = [2000] + [100] * 9  # one mode 20x bigger than each of the others
CONFIG = KMeansConfig(n_iter=10, seed=0, chunk_rows=512)


@pytest.fixture(scope="module")
def dominant():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((len(MODES), 16))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(MODES)), MODES)
    x = centres[labels] + 0.1 * rng.standard_normal((len(labels), 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    hierarchy = hierarchical_kmeans(x, [(60, 3, 10), (10, 3, 3)], CONFIG)
    return x, labels, hierarchy


def test_tree_is_consistent(dominant):
    x, _, h = dominant
    assert h.num_levels == 2 and h.num_rows == len(x)
    assert h.assignments[0].shape == (len(x),) and h.assignments[1].shape == (60,)
    assert h.assignments[0].max() < 60 and h.assignments[1].max() < 10
    for level in range(2):
        np.testing.assert_allclose(np.linalg.norm(h.centroids[level], axis=1), 1.0, atol=1e-5)
        points = x if level == 0 else h.centroids[0]
        expected = np.sum(points * h.centroids[level][h.assignments[level]], axis=1)
        np.testing.assert_allclose(h.similarities[level], expected, atol=1e-5)
    assert h.sizes(0).sum() == h.sizes(1).sum() == len(x)
    np.testing.assert_array_equal(np.bincount(h.row_clusters(1), minlength=10), h.sizes(1))
    np.testing.assert_array_equal(h.row_clusters(1), h.assignments[1][h.assignments[0]])


def test_balanced_sampling_flattens_the_dominant_mode(dominant):
    x, labels, h = dominant
    picked = balanced_sample(h, 500, seed=1)
    assert len(picked) == 500 and np.all(np.diff(picked) > 0)
    before = np.mean(labels == 0)  # 2000 / 2900 = 0.69
    after = np.mean(labels[picked] == 0)
    assert before > 0.6 and after < 0.15  # uniform over 10 modes would be 0.10
    shares = np.bincount(labels[picked], minlength=len(MODES)) / 500
    assert shares.min() > 0.05


def test_balanced_sampling_is_deterministic_and_strategies_differ(dominant):
    _, _, h = dominant
    np.testing.assert_array_equal(balanced_sample(h, 321, seed=4), balanced_sample(h, 321, seed=4))
    assert not np.array_equal(balanced_sample(h, 321, seed=4), balanced_sample(h, 321, seed=5))
    closest = balanced_sample(h, 321, seed=4, strategy="closest")
    assert len(closest) == 321
    # Within each level-0 cluster, "closest" keeps the highest-similarity rows.
    chosen = np.zeros(h.num_rows, bool)
    chosen[closest] = True
    sims, clusters = h.similarities[0], h.assignments[0]
    for c in np.unique(clusters[closest]):
        inside = clusters == c
        assert sims[inside & chosen].min() >= sims[inside & ~chosen].max(initial=-1.0)


def test_whole_set_and_errors(dominant):
    _, _, h = dominant
    np.testing.assert_array_equal(balanced_sample(h, h.num_rows), np.arange(h.num_rows))
    with pytest.raises(InputError, match="target"):
        balanced_sample(h, h.num_rows + 1)
    with pytest.raises(ConfigError, match="strategy"):
        balanced_sample(h, 10, strategy="nearest")
    with pytest.raises(InputError, match="levels"):
        hierarchical_kmeans(np.eye(4, dtype=np.float32), [LevelSpec(2), LevelSpec(3)], CONFIG)


def test_save_and_load_round_trip(dominant, tmp_path):
    _, _, h = dominant
    h.save(tmp_path / "tree.npz")
    loaded = Hierarchy.load(tmp_path / "tree.npz")
    for level in range(h.num_levels):
        np.testing.assert_array_equal(loaded.assignments[level], h.assignments[level])
        np.testing.assert_array_equal(loaded.centroids[level], h.centroids[level])
    np.testing.assert_array_equal(balanced_sample(loaded, 100, seed=2), balanced_sample(h, 100, seed=2))


def test_hierarchy_is_deterministic_and_streams(planted, stream_only):
    x, _, _ = planted([80] * 5, dim=8, noise=0.2, seed=9)
    levels = [LevelSpec(20, 2, 3, "random"), LevelSpec(4, 1, 2)]
    first = hierarchical_kmeans(x, levels, CONFIG)
    streamed = hierarchical_kmeans(stream_only(x), levels, KMeansConfig(n_iter=10, seed=0, chunk_rows=33))
    for level in range(2):
        np.testing.assert_array_equal(first.assignments[level], streamed.assignments[level])
        np.testing.assert_allclose(first.centroids[level], streamed.centroids[level], atol=1e-5)


def brute_cap(sizes, quota):
    return max(t for t in range(int(sizes.max(initial=0)) + 2) if np.minimum(t, sizes).sum() <= quota)


def test_waterfill_matches_the_cap_definition():
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(0, 30, size=rng.integers(1, 15))
        quota = int(rng.integers(0, sizes.sum() + 1))
        alloc = waterfill(sizes, quota, rng)
        t = brute_cap(sizes, quota)
        assert alloc.sum() == quota and np.all(alloc <= sizes)
        np.testing.assert_array_equal(alloc[sizes <= t], sizes[sizes <= t])
        assert np.all(np.isin(alloc[sizes > t], [t, t + 1]))


def test_waterfill_groups_equals_one_group_at_a_time():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 6, size=40)
    sizes = rng.integers(0, 20, size=40)
    totals = np.bincount(groups, weights=sizes, minlength=6).astype(int)
    quotas = (totals * rng.random(6)).astype(int)
    alloc = waterfill_groups(sizes, groups, quotas, rng)
    for g in range(6):
        members = groups == g
        t = brute_cap(sizes[members], quotas[g])
        assert alloc[members].sum() == quotas[g]
        small = members & (sizes <= t)
        np.testing.assert_array_equal(alloc[small], sizes[small])
        assert np.all(np.isin(alloc[members & (sizes > t)], [t, t + 1]))


def test_take_per_cluster_picks_smallest_keys():
    assignment = np.array([0, 1, 0, 0, 1, 2, 0])
    key = np.array([5.0, 1.0, 3.0, 3.0, 0.0, 9.0, 4.0])
    np.testing.assert_array_equal(take_per_cluster(assignment, key, np.array([2, 1, 0])), [2, 3, 4])
    np.testing.assert_array_equal(take_per_cluster(assignment, key, 1), [2, 4, 5])  # tie 2/3 -> row 2
