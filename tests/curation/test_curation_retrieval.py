"""DINOv2 retrieval rules: k-NN per seed with collisions and caps, linked-cluster sampling, the union."""
from __future__ import annotations

import numpy as np

from curation_data import unit_rows
from lvdtool.curation.retrieval import SeedResult, retrieve_nearest, sample_linked_clusters
from lvdtool.curation.search import PoolSearcher, SearchConfig
from lvdtool.curation.union import union_of, union_stats
from lvdtool.index import select_backend


def _searcher(pool):
    return PoolSearcher(pool, SearchConfig(chunk_rows=64), select_backend("cpu", "faiss"))


def test_nearest_pool_images_with_collisions_and_cap():
    rng = np.random.default_rng(0)
    pool = unit_rows(rng.standard_normal((200, 32)))
    seeds = np.stack([pool[10], pool[10], pool[50]]) + 0.01  # two identical queries collide on everything
    seeds = unit_rows(seeds)
    got = retrieve_nearest(_searcher(pool), seeds, k=3, cap=None)
    exact = np.argsort(-(seeds @ pool.T), axis=1)[:, :3]
    assert set(got.pool_rows.tolist()) == set(exact.ravel().tolist())
    assert got.stats["retrieved"] == 9 and got.stats["unique"] == 6 and got.stats["collisions"] == 3
    assert got.stats["most_hits"] == 2
    assert 10 in got.pool_rows and got.query_rows[got.pool_rows.tolist().index(10)] == 0  # tie -> first query
    capped = retrieve_nearest(_searcher(pool), seeds, k=3, cap=2)
    sims = np.max(seeds @ pool.T, axis=0)
    assert set(capped.pool_rows.tolist()) == set(np.argsort(-sims)[:2].tolist())
    assert capped.stats["capped_out"] == 4 and capped.stats["selected"] == 2


def test_only_clusters_with_more_than_three_seed_images_are_sampled():
    # pool clusters: 0 (10 images), 1 (10), 2 (5), 3 (10)
    assignment = np.repeat([0, 1, 2, 3], [10, 10, 5, 10])
    similarity = np.linspace(0.5, 1.0, len(assignment)).astype(np.float32)
    seeds = np.repeat([0, 1, 2], [4, 3, 9])  # cluster 1 has exactly 3 seeds: not linked; cluster 3 none
    rng = np.random.default_rng(0)
    got = sample_linked_clusters(assignment, similarity, seeds, 4, per_cluster=6, min_seed_images=3, cap=None, rng=rng)
    picked = np.bincount(assignment[got.pool_rows], minlength=4)
    assert picked.tolist() == [6, 0, 5, 0]  # cluster 2 is smaller than per_cluster: all of it
    assert got.stats["clusters_linked"] == 2 and got.stats["candidates"] == 11
    assert np.array_equal(got.similarity, similarity[got.pool_rows]) and np.all(got.query_rows == -1)
    capped = sample_linked_clusters(assignment, similarity, seeds, 4, 6, 3, cap=8, rng=np.random.default_rng(0))
    assert np.bincount(assignment[capped.pool_rows], minlength=4).tolist() == [4, 0, 4, 0]  # evenly lowered
    assert capped.stats["capped_out"] == 3


def test_union_keeps_each_image_once_with_the_first_set():
    a = SeedResult(np.array([1, 4, 7]), np.array([0, 1, 2]), np.array([0.9, 0.8, 0.7], np.float32))
    b = SeedResult(np.array([0, 4]), np.array([5, 6]), np.array([0.5, 0.99], np.float32))
    u = union_of([a, b])
    assert u.pool_rows.tolist() == [0, 1, 4, 7]
    assert u.source.tolist() == [1, 0, 0, 0] and u.query_rows.tolist() == [5, 0, 1, 2]
    assert u.n_sets.tolist() == [1, 1, 2, 1]
    assert union_stats(u, ["a", "b"]) == {"selected": 4, "in_several_sets": 1, "attributed": {"a": 3, "b": 1}}
