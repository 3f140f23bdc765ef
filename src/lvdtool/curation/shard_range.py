"""A `VectorSource` over consecutive shards of an embeddings artifact: one rank's part of the pool.

Ranks split the pool by whole shards (balanced by rows), so a rank reads only its own shards,
never the ones before them (a `RowSubset` of the whole artifact would stream from row 0).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from lvdtool.artifacts.embeddings import EmbeddingsArtifact, coalesced_chunks
from lvdtool.curation.keyed_rows import shard_starts


class ShardRange:
    """Rows of shards [first, stop) of `emb`, renumbered from 0."""

    def __init__(self, emb: EmbeddingsArtifact, first: int, stop: int) -> None:
        self.emb, self.first, self.stop = emb, int(first), int(stop)
        starts = shard_starts(emb)
        self.row_start, self.row_stop = int(starts[self.first]), int(starts[self.stop])

    @property
    def num_vectors(self) -> int:
        return self.row_stop - self.row_start

    @property
    def dim(self) -> int:
        return self.emb.dim

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        return coalesced_chunks((self.emb.read_shard(s)[1] for s in self.emb.shards[self.first:self.stop]), chunk_rows)


def rank_shards(rows_per_shard: np.ndarray, world_size: int) -> np.ndarray:
    """Shard bounds [world_size + 1] giving each rank consecutive shards with about equal rows."""
    cumulative = np.concatenate([[0], np.cumsum(np.asarray(rows_per_shard, np.int64))])
    targets = cumulative[-1] * np.arange(world_size + 1) / world_size
    bounds = np.searchsorted(cumulative, targets, side="left")
    bounds[0], bounds[-1] = 0, len(rows_per_shard)
    return np.maximum.accumulate(bounds).astype(np.int64)
