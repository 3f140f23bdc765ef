import faiss
import numpy as np
import pytest

from lvdtool.errors import ConfigError
from lvdtool.index import estimate_costs


def test_counts_follow_the_formulas():
    n, d, k, clusters = 1_000_000, 384, 64, 1000
    est = estimate_costs(n, d, k=k, n_clusters=clusters, n_iter=10, index="Flat", bytes_per_element=2,
                         init_rounds=0)
    assert est.vector_bytes == n * d * 2
    assert est.index_bytes_per_vector == 4 * d and est.index_bytes == 4 * d * n
    assert est.knn_flops == pytest.approx(2.0 * n * n * d)
    assert est.kmeans_flops == pytest.approx(2.0 * n * d * clusters * 11)
    assert est.knn_result_bytes == n * k * 12 and est.assignment_bytes == n * 12
    assert est.seconds(1e12)["knn"] == pytest.approx(est.knn_flops / 1e12)
    assert "GiB" in est.as_table()


def test_ivf_pq_size_matches_a_real_index():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    est = estimate_costs(len(x), 32, index="IVF8,PQ4x4")
    assert est.index_bytes_per_vector == 4 * 4 // 8 + 8  # 4 codes of 4 bits + an int64 id
    index = faiss.index_factory(32, "IVF8,PQ4x4", faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    real = len(faiss.serialize_index(index))
    assert 0.8 * real < est.index_bytes < 1.25 * real


def test_bad_factory_string():
    with pytest.raises(ConfigError, match="index"):
        estimate_costs(10, 8, index="IVF,Nonsense")
