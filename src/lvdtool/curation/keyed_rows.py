"""Keys and shard row ranges of an embeddings artifact: row i of the artifact <-> key <-> shard.

No step holds every key: keys are read shard by shard as fixed-width bytes arrays (numpy "S",
no Python object per row), either a whole shard when writing it, or only the rows a global step
needs (component members, removed rows, the few images of a report) via `keys_of_rows`, which
opens only the shards holding them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.artifacts.tables import read_table
from lvdtool.artifacts.keys import key_bytes  # noqa: F401  (re-exported: curation reads keys through here)
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


def shard_starts(emb: EmbeddingsArtifact) -> np.ndarray:
    """int64 [shards + 1]: first row of each shard, then the number of rows."""
    counts = np.array([int(s["rows"]) for s in emb.manifest.shards], dtype=np.int64)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def as_string_array(keys: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Bytes keys back to an Arrow string column (nulls where `valid` is False)."""
    mask = None if valid is None else ~np.asarray(valid, dtype=bool)
    return pa.array(np.asarray(keys, dtype=bytes), type=pa.binary(), mask=mask).cast(pa.string())


def read_shard_keys(emb: EmbeddingsArtifact, shard: str, rows: int | None = None) -> np.ndarray:
    """The keys of one embeddings shard in row order (bytes); refuses a shard that miscounts or repeats keys."""
    path = emb.shard_path(shard)
    if not path.exists():
        raise ArtifactError(f"{path}: embeddings shard {shard} is missing")
    try:
        keys = key_bytes(read_table(path, columns=["key"], what="embeddings shard").column("key"))
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    if rows is not None and len(keys) != rows:
        raise ArtifactError(f"{path}: {len(keys)} keys but the manifest counts {rows} rows for shard {shard}")
    if len(keys) > 1:
        ordered = np.sort(keys)
        if np.any(ordered[1:] == ordered[:-1]):
            raise ArtifactError(f"{path}: keys repeat in shard {shard}; an embeddings artifact must have one vector per key")
    return keys


def keys_of_rows(emb: EmbeddingsArtifact, rows: np.ndarray) -> np.ndarray:
    """Keys (bytes) of artifact rows `rows` (any order, repeats allowed), reading only the shards that hold them."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = shard_starts(emb)
    if rows.size and (rows.min() < 0 or rows.max() >= starts[-1]):
        raise ArtifactError(f"{emb.path}: row out of range for {int(starts[-1])} rows")
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    cuts = np.searchsorted(sorted_rows, starts)
    parts, where = [], []
    for s in np.flatnonzero(cuts[1:] > cuts[:-1]):
        shard = emb.manifest.shards[s]
        keys = read_shard_keys(emb, shard["name"], int(shard["rows"]))
        parts.append(keys[sorted_rows[cuts[s]:cuts[s + 1]] - starts[s]])
        where.append(order[cuts[s]:cuts[s + 1]])
    if not parts:
        return np.zeros(len(rows), dtype="S1")
    width = max(p.dtype.itemsize for p in parts)
    out = np.zeros(len(rows), dtype=f"S{width}")
    for p, w in zip(parts, where):
        out[w] = p
    return out


def decode(keys: np.ndarray) -> np.ndarray:
    """Bytes keys -> a numpy str array (for the few keys a report shows)."""
    return np.char.decode(np.asarray(keys, dtype=bytes), "utf-8") if len(keys) else np.zeros(0, dtype=str)


class RowKeys:
    """`keys[rows]` of an artifact (or of a row subset of it) read lazily: a stand-in for an N-key
    array in reports, which show a few keys; the last shard read is cached."""

    def __init__(self, emb: EmbeddingsArtifact, rows: np.ndarray | None = None) -> None:
        self.emb = emb
        self.rows = rows  # artifact row of each row of this view (None: all rows)
        self._starts = shard_starts(emb)
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(len(self.rows)) if self.rows is not None else int(self._starts[-1])

    def subset(self, index: np.ndarray) -> "RowKeys":
        """The keys of rows `index` of this view, still read lazily."""
        return RowKeys(self.emb, self._artifact_rows(np.asarray(index, dtype=np.int64)))

    def _artifact_rows(self, index: np.ndarray) -> np.ndarray:
        return index if self.rows is None else self.rows[index]

    def __getitem__(self, index):
        if np.isscalar(index):
            row = int(self._artifact_rows(np.array([index], dtype=np.int64))[0])
            s = int(np.searchsorted(self._starts, row, side="right") - 1)
            if self._cached is None or self._cached[0] != s:
                shard = self.emb.manifest.shards[s]
                self._cached = (s, read_shard_keys(self.emb, shard["name"], int(shard["rows"])))
            return self._cached[1][row - self._starts[s]].decode("utf-8")
        return decode(keys_of_rows(self.emb, self._artifact_rows(np.asarray(index, dtype=np.int64))))


def artifact_keys(emb: EmbeddingsArtifact) -> np.ndarray:
    """All keys in row order as a str array: only for small artifacts (eval and seed sets in reports)."""
    return decode(keys_of_rows(emb, np.arange(emb.num_vectors, dtype=np.int64)))
