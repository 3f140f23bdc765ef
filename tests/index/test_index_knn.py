import numpy as np
import pytest

from lvdtool.errors import ConfigError, InputError
from lvdtool.index import knn_search, merge_topk, range_search, self_knn, self_range_pairs

ENGINES = [("faiss", "fp32"), ("torch", "fp32"), ("torch", "bf16")]


def brute_force(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return q.astype(np.float64) @ x.astype(np.float64).T


def check_neighbours(sims, ids, full, k):
    """Returned sims are the true top-k sims; every id really has its sim; ties ordered by id."""
    true_top = -np.sort(-full, axis=1)[:, :k]
    np.testing.assert_allclose(sims, true_top, atol=2e-6)
    np.testing.assert_allclose(np.take_along_axis(full, ids, axis=1), sims, atol=2e-6)
    assert all(len(set(row)) == k for row in ids)
    same = sims[:, 1:] == sims[:, :-1]
    assert np.all(ids[:, 1:][same] > ids[:, :-1][same])


@pytest.mark.parametrize("engine, precision", ENGINES)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_exact_knn_equals_brute_force_with_chunks_and_ties(planted, engine, precision, dtype):
    x, _, _ = planted([60] * 5, dim=24, noise=0.3, seed=1)
    x = np.concatenate([x, x[:40]]).astype(dtype)  # exact duplicates: tied similarities
    q = x[::7]
    sims, ids = knn_search(q, x, 10, engine=engine, precision=precision, chunk_rows=37, query_chunk_rows=9)
    assert sims.dtype == np.float32 and ids.dtype == np.int64 and sims.shape == (len(q), 10)
    check_neighbours(sims, ids, brute_force(q.astype(np.float32), x.astype(np.float32)), 10)


def test_exact_knn_streams_a_vector_source(planted, stream_only):
    x, _, _ = planted([50] * 4, dim=8, noise=0.3)
    q = x[:30]
    database = stream_only(x)
    sims, ids = knn_search(stream_only(q), database, 5, engine="torch", chunk_rows=16, query_block_rows=10)
    check_neighbours(sims, ids, brute_force(q, x), 5)
    assert database.passes == 3  # one pass over the database per block of 10 queries


def test_engines_agree_on_neighbours(planted):
    x, _, _ = planted([100] * 6, dim=32, noise=0.4, seed=3)
    q = x[::5]
    faiss_result = knn_search(q, x, 8, engine="faiss", chunk_rows=128)
    torch_result = knn_search(q, x, 8, engine="torch", chunk_rows=128)
    np.testing.assert_allclose(faiss_result[0], torch_result[0], atol=1e-5)
    assert (faiss_result[1] == torch_result[1]).mean() > 0.99  # only near-ties may swap


def test_database_smaller_than_k_is_padded():
    x = np.eye(3, dtype=np.float32)
    for engine in ("faiss", "torch"):
        sims, ids = knn_search(x[:1], x, 5, engine=engine, chunk_rows=2)
        assert ids[0, 0] == 0 and sims[0, 0] == pytest.approx(1.0)
        assert np.all(ids[0, 3:] == -1) and np.all(np.isneginf(sims[0, 3:]))


def test_cosine_metric_normalises_inputs(planted):
    x, _, _ = planted([40] * 3, dim=8, noise=0.5)
    scale = np.linspace(0.5, 3.0, len(x), dtype=np.float32)[:, None]
    sims, ids = knn_search(x[:10] * 2.0, x * scale, 4, metric="cosine", engine="torch", chunk_rows=25)
    check_neighbours(sims, ids, brute_force(x[:10], x), 4)


def test_ivf_recall_on_clustered_data(planted):
    x, _, _ = planted([400] * 10, dim=32, noise=0.25, seed=4)
    q = x[::20]
    exact = knn_search(q, x, 10, engine="faiss")[1]
    approx_sims, approx = knn_search(q, x, 10, index="IVF32,Flat", nprobe=8, chunk_rows=1000, train_sample=2000)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.9
    np.testing.assert_allclose(approx_sims, np.take_along_axis(brute_force(q, x), approx, 1), atol=1e-5)
    pq_ids = knn_search(q, x, 10, index="IVF16,PQ8", nprobe=16, chunk_rows=1000)[1]
    pq_recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(pq_ids, exact)])
    assert pq_recall > 0.3  # 8-byte codes of 32-d vectors: coarse, but far better than chance (0.0025)


def test_torch_engine_refuses_faiss_indices(planted):
    x, _, _ = planted([20] * 2, dim=8)
    with pytest.raises(ConfigError, match="index"):
        knn_search(x, x, 2, index="IVF4,Flat", engine="torch")
    with pytest.raises(InputError, match="lists"):
        knn_search(x, x, 2, index="IVF64,Flat")
    with pytest.raises(InputError, match="database"):
        knn_search(x, x[:, :4], 2)


def test_self_knn_excludes_each_row_even_with_duplicates(planted):
    x, _, _ = planted([30] * 3, dim=8, noise=0.3)
    x = np.concatenate([x, x[:5]])  # rows i and 90+i are identical
    sims, ids = self_knn(x, 4, engine="torch", chunk_rows=17)
    assert not np.any(ids == np.arange(len(x))[:, None])
    full = brute_force(x, x)
    np.fill_diagonal(full, -np.inf)
    check_neighbours(sims, ids, full, 4)
    assert np.all(ids[:5, 0] == np.arange(90, 95))


@pytest.mark.parametrize("engine, precision", ENGINES)
def test_range_search_equals_brute_force(planted, engine, precision):
    x, _, _ = planted([50] * 4, dim=16, noise=0.3, seed=5)
    x16 = x.astype(np.float16)
    q = x16[::3]
    result = range_search(q, x16, 0.8, engine=engine, precision=precision, chunk_rows=33, query_chunk_rows=7)
    full = brute_force(q.astype(np.float32), x16.astype(np.float32))
    rows, cols = np.nonzero(full > 0.8)
    assert result.lims[-1] == len(rows) and len(result.lims) == len(q) + 1
    got_rows, got_ids, got_sims = result.pairs()
    np.testing.assert_array_equal(got_rows, rows)
    np.testing.assert_array_equal(got_ids, cols)
    np.testing.assert_allclose(got_sims, full[rows, cols], atol=2e-6)


def test_self_range_pairs_is_the_upper_triangle(planted, stream_only):
    x, _, _ = planted([40] * 5, dim=16, noise=0.3, seed=6)
    full = brute_force(x, x)
    expected_i, expected_j = np.nonzero(np.triu(full > 0.85, k=1))
    for engine in ("faiss", "torch"):
        i, j, sims = self_range_pairs(stream_only(x), 0.85, engine=engine, chunk_rows=30, query_chunk_rows=11)
        np.testing.assert_array_equal(i, expected_i)
        np.testing.assert_array_equal(j, expected_j)
        np.testing.assert_allclose(sims, full[i, j], atol=2e-6)
    i, j, _ = self_range_pairs(x, 0.85, index="IVF4,Flat", nprobe=4)
    np.testing.assert_array_equal(i, expected_i)  # nprobe = nlist: exhaustive
    np.testing.assert_array_equal(j, expected_j)


def test_merge_topk_over_shards_equals_one_search(planted):
    x, _, _ = planted([60] * 5, dim=16, noise=0.3, seed=7)
    q = x[:25]
    whole = knn_search(q, x, 6, engine="torch")
    parts = []
    for start in range(0, len(x), 110):
        sims, ids = knn_search(q, x[start : start + 110], 6, engine="faiss")
        parts.append((sims, np.where(ids >= 0, ids + start, ids)))
    merged = merge_topk(parts, 6)
    np.testing.assert_allclose(merged[0], whole[0], atol=1e-6)
    np.testing.assert_array_equal(merged[1], whole[1])
