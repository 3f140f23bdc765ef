"""Keys and shard row ranges of an embeddings artifact: row i of the artifact <-> key <-> shard."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.errors import ArtifactError


@dataclass(frozen=True)
class ShardRows:
    name: str
    start: int
    stop: int


def shard_rows(emb: EmbeddingsArtifact) -> list[ShardRows]:
    out, start = [], 0
    for shard in emb.manifest.shards:
        out.append(ShardRows(shard["name"], start, start + int(shard["rows"])))
        start += int(shard["rows"])
    return out


def artifact_keys(emb: EmbeddingsArtifact) -> np.ndarray:
    """All keys in row order (a str array); refuses artifacts whose keys repeat or miscount."""
    keys = np.array(emb.keys(), dtype=str)
    if len(keys) != emb.num_vectors:
        raise ArtifactError(f"{emb.path}: shards hold {len(keys)} keys but the manifest counts {emb.num_vectors} rows")
    if len(np.unique(keys)) != len(keys):
        raise ArtifactError(f"{emb.path}: keys repeat; an embeddings artifact must have one vector per key")
    return keys
