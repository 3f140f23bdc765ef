import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from lvdtool.errors import ConfigError, InputError
from lvdtool.index import KMeansConfig, assign, spherical_kmeans
from lvdtool.index.backend import select_backend
from lvdtool.index.cluster_context import ClusterContext
from lvdtool.index.distributed import partition
from lvdtool.index.kmeans_init import InitOptions, hash_uniform, initial_centroids
from lvdtool.index.vectors import ArrayVectors

SIZES = [150, 90, 200, 60, 120, 80, 170, 130]


def cfg(**overrides) -> KMeansConfig:
    base = dict(n_iter=8, seed=3, chunk_rows=128, engine="torch", device="cpu")
    base.update(overrides)
    return KMeansConfig(**base)


@pytest.mark.parametrize("engine", ["torch", "faiss"])
@pytest.mark.parametrize("init", ["kmeans||", "random"])
def test_recovers_planted_clusters(planted, engine, init):
    x, labels, centres = planted(SIZES, dim=16, noise=0.05, seed=11)
    result = spherical_kmeans(x, len(SIZES), cfg(engine=engine, init=init))
    if init == "kmeans||":  # random init may merge two clusters; kmeans|| must not
        assert adjusted_rand_score(labels, result.assignment) > 0.95
    assert result.engine == engine
    np.testing.assert_allclose(np.linalg.norm(result.centroids, axis=1), 1.0, atol=1e-5)
    expected = np.sum(x * result.centroids[result.assignment], axis=1)
    np.testing.assert_allclose(result.similarity, expected, atol=1e-5)
    assert np.all(result.similarity >= (x @ result.centroids.T).max(axis=1) - 1e-6)
    assert 1 <= len(result.objective_history) <= 8


def test_stopping_at_convergence_changes_nothing(planted):
    x, _, _ = planted(SIZES, dim=16, noise=0.05, seed=11)
    early = spherical_kmeans(x, len(SIZES), cfg(n_iter=30))
    full = spherical_kmeans(x, len(SIZES), cfg(n_iter=30, stop_when_converged=False))
    assert len(early.objective_history) < 30 == len(full.objective_history)
    np.testing.assert_array_equal(early.centroids, full.centroids)


def test_kmeans_parallel_init_hits_every_planted_cluster(planted):
    x, labels, centres = planted(SIZES, dim=16, noise=0.05, seed=12)
    ctx = ClusterContext(select_backend(engine="torch"), 100, partition(len(x), False), False)
    init = initial_centroids(ArrayVectors(x), len(SIZES), 5, ctx, "kmeans||", InitOptions())
    nearest_centre = (init.numpy() @ centres.T).argmax(axis=1)
    assert sorted(nearest_centre) == list(range(len(SIZES)))


def test_deterministic_for_a_seed(planted):
    x, _, _ = planted(SIZES, dim=16, noise=0.2, seed=13)
    first = spherical_kmeans(x, 12, cfg(seed=7))
    second = spherical_kmeans(x, 12, cfg(seed=7))
    other = spherical_kmeans(x, 12, cfg(seed=8))
    np.testing.assert_array_equal(first.centroids, second.centroids)
    np.testing.assert_array_equal(first.assignment, second.assignment)
    assert not np.array_equal(first.centroids, other.centroids)


def test_out_of_core_equals_in_memory(planted, stream_only):
    x, _, _ = planted(SIZES, dim=16, noise=0.2, seed=14)
    x16 = x.astype(np.float16)
    in_memory = spherical_kmeans(x16, 10, cfg(chunk_rows=len(x)))
    streamed_source = stream_only(x16)
    streamed = spherical_kmeans(streamed_source, 10, cfg(chunk_rows=37))
    assert streamed_source.passes >= 8  # really streamed: one pass per Lloyd iteration at least
    np.testing.assert_allclose(streamed.centroids, in_memory.centroids, atol=1e-5)
    np.testing.assert_array_equal(streamed.assignment, in_memory.assignment)
    np.testing.assert_allclose(streamed.objective_history, in_memory.objective_history, rtol=1e-6)
    assert len(streamed.objective_history) == len(in_memory.objective_history)


def test_faiss_and_torch_agree_from_the_same_init(planted):
    x, _, _ = planted(SIZES, dim=16, noise=0.25, seed=15)
    init = x[np.random.default_rng(0).choice(len(x), 10, replace=False)]
    fixed = dict(n_iter=6, stop_when_converged=False)
    by_torch = spherical_kmeans(x, 10, cfg(**fixed), init_centroids=init)
    by_faiss = spherical_kmeans(x, 10, cfg(engine="faiss", **fixed), init_centroids=init)
    assert by_torch.reseeded == 0  # no empty cluster, so both engines run the same Lloyd steps
    np.testing.assert_array_equal(by_torch.assignment, by_faiss.assignment)
    np.testing.assert_allclose(by_torch.centroids, by_faiss.centroids, atol=1e-5)
    np.testing.assert_allclose(by_torch.objective_history, by_faiss.objective_history, rtol=1e-5)
    assert np.all(np.diff(by_torch.objective_history) >= -1e-6)  # Lloyd never gets worse


def test_float64_accumulation_and_bf16_assignment(planted):
    x, labels, _ = planted(SIZES, dim=16, noise=0.05, seed=16)
    base = spherical_kmeans(x, len(SIZES), cfg())
    wide = spherical_kmeans(x, len(SIZES), cfg(accumulate="float64"))
    np.testing.assert_allclose(wide.centroids, base.centroids, atol=1e-5)
    low = spherical_kmeans(x, len(SIZES), cfg(precision="bf16"))
    assert adjusted_rand_score(base.assignment, low.assignment) > 0.99
    np.testing.assert_allclose(low.similarity, np.sum(x * low.centroids[low.assignment], 1), atol=1e-5)


def test_empty_clusters_are_reseeded_from_far_points(planted):
    x, _, _ = planted([200, 200, 200], dim=8, noise=0.05, seed=17)
    init = np.repeat(x[:1], 3, axis=0)  # three identical centroids: two clusters start empty
    result = spherical_kmeans(x, 3, cfg(n_iter=5), init_centroids=init)
    assert result.reseeded >= 2
    assert np.all(result.sizes() > 0)
    again = spherical_kmeans(x, 3, cfg(n_iter=5), init_centroids=init)
    np.testing.assert_array_equal(result.centroids, again.centroids)


def test_fit_on_sample_then_assign_all(planted, stream_only):
    x, labels, _ = planted([300] * 6, dim=16, noise=0.05, seed=18)
    source = stream_only(x)
    result = spherical_kmeans(source, 6, cfg(fit_sample=400))
    assert len(result.assignment) == len(x)
    assert adjusted_rand_score(labels, result.assignment) > 0.95
    labels_again, sims = assign(x, result.centroids, chunk_rows=50)
    np.testing.assert_array_equal(labels_again, result.assignment)
    np.testing.assert_allclose(sims, result.similarity, atol=1e-6)


def test_faiss_engine_refuses_streamed_sources(planted, stream_only):
    x, _, _ = planted([50] * 2, dim=8)
    with pytest.raises(ConfigError, match="engine"):
        spherical_kmeans(stream_only(x), 2, cfg(engine="faiss"))
    auto = spherical_kmeans(stream_only(x), 2, cfg(engine="auto"))
    assert auto.engine == "torch"  # auto falls back instead of failing
    with pytest.raises(InputError, match="n_clusters"):
        spherical_kmeans(x[:3], 5, cfg())
    with pytest.raises(ConfigError, match="init"):
        spherical_kmeans(x, 2, cfg(init="kmeans++-sequential"))


def test_hash_uniform_is_a_function_of_seed_stream_and_row():
    rows = np.arange(100_000)
    u = hash_uniform(1, 2, rows)
    np.testing.assert_array_equal(u[500:600], hash_uniform(1, 2, rows[500:600]))
    assert not np.array_equal(u, hash_uniform(1, 3, rows))
    assert not np.array_equal(u, hash_uniform(2, 2, rows))
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(np.mean(u < 0.1) - 0.1) < 0.01

