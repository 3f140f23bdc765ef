"""The near-duplicate graph: k-NN blocks, thresholded pairs, components; engines and indices agree."""
from __future__ import annotations

import numpy as np
import pytest

from curation_data import unit_rows
from lvdtool.curation.duplicate_graph import duplicate_components, self_neighbour_pairs
from lvdtool.curation.search import PoolSearcher, SearchConfig
from lvdtool.curation.work_state import WorkState
from lvdtool.index import select_backend


@pytest.fixture(scope="module")
def copies():
    """40 random 64-d images (pairwise cosine ~N(0, 1/64)); 12 of them get 1-3 near copies (cosine ~0.99)."""
    rng = np.random.default_rng(3)
    base = unit_rows(rng.standard_normal((40, 64)))
    rows, group = list(base), list(range(40))
    for g in range(12):
        for _ in range(1 + g % 3):
            rows.append(base[g] + 0.08 * rng.standard_normal(64) / 8)
            group.append(g)
    order = rng.permutation(len(rows))  # copies scattered among the originals
    return unit_rows(np.array(rows))[order], np.array(group)[order]


def _pairs(vectors, tmp_path, engine="faiss", index="Flat", block_rows=1000, name="w"):
    searcher = PoolSearcher(vectors, SearchConfig(index=index, nprobe=4, chunk_rows=16), select_backend("cpu", engine))
    return self_neighbour_pairs(searcher, 8, 0.5, block_rows, WorkState(tmp_path / name))


def test_components_are_the_planted_groups(copies, tmp_path):
    vectors, group = copies
    pairs = _pairs(vectors, tmp_path)
    labels = duplicate_components(len(vectors), pairs, 0.6)
    # same component <=> same planted group
    assert np.array_equal(labels[:, None] == labels[None, :], group[:, None] == group[None, :])
    assert np.all(pairs.a < pairs.b) and len(set(zip(pairs.a, pairs.b))) == len(pairs)


def test_blocks_engines_and_ivf_give_the_same_pairs(copies, tmp_path):
    vectors, _ = copies
    ref = _pairs(vectors, tmp_path, name="ref")
    for i, options in enumerate([dict(block_rows=7), dict(engine="torch"), dict(index="IVF4,Flat")]):
        got = _pairs(vectors, tmp_path, name=f"v{i}", **options)
        assert np.array_equal(got.a, ref.a) and np.array_equal(got.b, ref.b), options
        assert np.allclose(got.sim, ref.sim, atol=1e-5)


def test_saved_blocks_are_reused(copies, tmp_path):
    vectors, _ = copies
    first = _pairs(vectors, tmp_path, block_rows=20, name="same")
    work = WorkState(tmp_path / "same")
    assert len(list(work.dir.glob("knn-*.npz"))) == int(np.ceil(len(vectors) / 20))
    searcher = PoolSearcher(vectors, SearchConfig(), select_backend("cpu", "faiss"))
    again = self_neighbour_pairs(searcher, 8, 0.5, 20, work)
    assert work.computed == [] and len(work.reused) == int(np.ceil(len(vectors) / 20))
    assert np.array_equal(again.a, first.a) and np.array_equal(again.sim, first.sim)


def test_torch_engine_refuses_an_ivf_index(copies):
    from lvdtool.errors import ConfigError

    with pytest.raises(ConfigError, match="search.index"):
        PoolSearcher(copies[0], SearchConfig(index="IVF4,Flat"), select_backend("cpu", "torch"))
