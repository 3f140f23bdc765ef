"""Embeddings are streamed in chunks of the asked size whatever the shard sizes (one kernel call per
chunk: with 100-row shards a per-shard chunk made the exact k-NN of a 200k-row dedup 5x slower)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "curation"))
from planted_pool import write_embeddings  # noqa: E402

from lvdtool.artifacts.embeddings import EmbeddingsArtifact  # noqa: E402
from lvdtool.curation.shard_range import ShardRange  # noqa: E402


def test_chunks_cross_shard_boundaries_and_keep_every_row_in_order(tmp_path):
    x = np.random.default_rng(0).standard_normal((1003, 8)).astype(np.float16)
    art = EmbeddingsArtifact(write_embeddings(tmp_path / "emb", x, shards=37))
    chunks = list(art.iter_chunks(256))
    assert [start for start, _ in chunks] == [0, 256, 512, 768]
    assert [len(c) for _, c in chunks] == [256, 256, 256, 235]
    assert all(c.dtype == np.float32 for _, c in chunks)
    assert np.array_equal(np.concatenate([c for _, c in chunks]), x.astype(np.float32))
    part = ShardRange(art, 5, 20)
    got = list(part.iter_chunks(100))
    assert all(len(c) == 100 for _, c in got[:-1]) and [s for s, _ in got] == list(range(0, part.num_vectors, 100))
    assert np.array_equal(np.concatenate([c for _, c in got]), x[part.row_start:part.row_stop].astype(np.float32))
