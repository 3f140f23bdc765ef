import numpy as np
import pytest

from lvdtool.errors import ConfigError, InputError
from lvdtool.index import connected_components, edges_from_knn, edges_from_range, range_search


def bfs_labels(n, src, dst):
    """Reference: plain breadth-first search, components numbered by smallest node."""
    neighbours = [[] for _ in range(n)]
    for a, b in zip(src, dst):
        neighbours[a].append(b)
        neighbours[b].append(a)
    labels = [-1] * n
    current = 0
    for start in range(n):
        if labels[start] >= 0:
            continue
        labels[start], queue = current, [start]
        while queue:
            node = queue.pop()
            for nxt in neighbours[node]:
                if labels[nxt] < 0:
                    labels[nxt] = current
                    queue.append(nxt)
        current += 1
    return np.array(labels)


@pytest.mark.parametrize("method", ["numpy", "scipy"])
@pytest.mark.parametrize("n, e", [(1, 0), (50, 0), (200, 150), (500, 600), (300, 2000)])
def test_components_equal_bfs_on_random_graphs(method, n, e):
    rng = np.random.default_rng(n + e)
    src, dst = rng.integers(0, n, size=e), rng.integers(0, n, size=e)
    np.testing.assert_array_equal(connected_components(n, src, dst, method=method), bfs_labels(n, src, dst))


def test_long_chain_needs_many_hooks():
    n = 5000
    order = np.random.default_rng(2).permutation(n)  # one path through all nodes, shuffled ids
    labels = connected_components(n, order[:-1], order[1:], method="numpy")
    assert np.all(labels == 0)


def test_numpy_and_scipy_agree_on_a_larger_graph():
    rng = np.random.default_rng(3)
    n, e = 200_000, 150_000
    src, dst = rng.integers(0, n, size=e), rng.integers(0, n, size=e)
    by_numpy = connected_components(n, src, dst, "numpy")
    np.testing.assert_array_equal(by_numpy, connected_components(n, src, dst, "scipy"))


def test_errors():
    with pytest.raises(InputError, match="edges"):
        connected_components(3, [0, 1], [1, 3])
    with pytest.raises(ConfigError, match="method"):
        connected_components(3, [0], [1], method="networkx")


def test_dedup_graph_from_knn_and_range(planted):
    x, _, _ = planted([30] * 4, dim=16, noise=0.02, seed=5)
    copies = np.concatenate([x, x[:10]])  # rows 120..129 duplicate rows 0..9
    full = copies @ copies.T
    sims = np.sort(full, axis=1)[:, ::-1][:, :5]
    ids = np.argsort(-full, axis=1, kind="stable")[:, :5]
    src, dst = edges_from_knn(sims, ids, 0.9)
    assert np.all(src != dst) and np.all(full[src, dst] > 0.9)
    knn_labels = connected_components(len(copies), src, dst)
    range_labels = connected_components(len(copies), *edges_from_range(range_search(copies, copies, 0.9)))
    expected = bfs_labels(len(copies), *np.nonzero(np.triu(full > 0.9, 1)))
    np.testing.assert_array_equal(range_labels, expected)
    assert np.all(knn_labels[:10] == knn_labels[120:])  # each copy joins its original
