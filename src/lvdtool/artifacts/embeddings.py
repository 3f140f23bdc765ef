"""The `embeddings` artifact: per shard a Parquet table of (key, vector) with float16 vectors.

shards/<shard>.parquet  columns: key (string), vector (fixed_size_binary(2*dim): little-endian float16)
fixed_size_binary keeps reads and writes fast (a list<halffloat> column is 15-40x slower); numpy
reads a whole column with one np.frombuffer. The manifest's `extra` names dim, dtype, the model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from lvdtool.artifacts.manifest import Manifest, open_input
from lvdtool.artifacts.tables import read_table
from lvdtool.errors import ArtifactError


def embeddings_table(keys: list[str], vectors: np.ndarray) -> pa.Table:
    if vectors.ndim != 2 or len(keys) != vectors.shape[0]:
        raise ArtifactError(f"embeddings: {len(keys)} keys for vectors of shape {vectors.shape}")
    vec = np.ascontiguousarray(vectors, dtype="<f2")
    width = vec.shape[1] * 2
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(keys), [None, pa.py_buffer(vec.tobytes())])
    return pa.table({"key": pa.array(keys, pa.string()), "vector": column})


def vectors_of(table: pa.Table, dim: int) -> np.ndarray:
    """The vector column as an (n, dim) float16 array (zero-copy where Arrow allows)."""
    col = table.column("vector").combine_chunks()
    if col.type.byte_width != 2 * dim:
        raise ArtifactError(f"embeddings: vector width {col.type.byte_width} bytes, expected {2 * dim}")
    buf = col.buffers()[1]
    arr = np.frombuffer(buf, dtype="<f2", count=len(col) * dim, offset=col.offset * 2 * dim)
    return arr.reshape(len(col), dim)


class EmbeddingsArtifact:
    """Read access to a complete `embeddings` artifact; also a VectorSource for the index package."""

    def __init__(self, path: str | Path, manifest: Manifest | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest or open_input(self.path, "embeddings")
        self.shards = [s["name"] for s in self.manifest.shards]
        self.dim = int(self.manifest.extra["dim"])
        self._rows = [int(s["rows"]) for s in self.manifest.shards]

    @property
    def num_vectors(self) -> int:
        return sum(self._rows)

    def shard_path(self, shard: str) -> Path:
        return self.path / "shards" / f"{shard}.parquet"

    def read_shard(self, shard: str) -> tuple[list[str], np.ndarray]:
        p = self.shard_path(shard)
        if not p.exists():
            raise ArtifactError(f"{p}: embeddings shard {shard} is missing")
        table = read_table(p, what=f"embeddings shard {shard}")
        return table.column("key").to_pylist(), vectors_of(table, self.dim)

    def keys(self) -> list[str]:
        out: list[str] = []
        for s in self.shards:
            out += read_table(self.shard_path(s), columns=["key"], what=f"embeddings shard {s}").column("key").to_pylist()
        return out

    def load(self, dtype=np.float32) -> tuple[list[str], np.ndarray]:
        """Everything in memory (small and medium artifacts; large ones stream with iter_chunks)."""
        keys: list[str] = []
        parts = []
        for s in self.shards:
            k, v = self.read_shard(s)
            keys += k
            parts.append(v.astype(dtype))
        vecs = np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype)
        return keys, vecs

    def iter_chunks(self, chunk_rows: int = 1 << 16) -> Iterator[tuple[int, np.ndarray]]:
        """(start_row, float32 block) in artifact order, chunk_rows rows each (the last may be
        shorter) whatever the shard sizes: bounded memory, and no per-shard call overhead downstream."""
        return coalesced_chunks((self.read_shard(s)[1] for s in self.shards), chunk_rows)

    def iter_row_range(self, start: int, stop: int, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Rows [start, stop) as (start_row, float32 block), chunk_rows rows per block counted from
        `start`; reads only the shards those rows lie in."""
        bounds = np.concatenate([[0], np.cumsum(np.asarray(self._rows, np.int64))])

        def blocks() -> Iterator[np.ndarray]:
            for i in range(int(np.searchsorted(bounds, start, side="right")) - 1, len(self.shards)):
                if bounds[i] >= stop:
                    return
                vectors = self.read_shard(self.shards[i])[1]
                yield vectors[max(0, start - bounds[i]) : min(len(vectors), stop - bounds[i])]

        for at, block in coalesced_chunks(blocks(), chunk_rows):
            yield start + at, block


def coalesced_chunks(blocks: Iterable[np.ndarray], chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Consecutive row blocks (shards) regrouped as (start_row, float32 chunk) of chunk_rows rows:
    a search over 100-row shards then makes one kernel call per chunk, not per shard."""
    if chunk_rows < 1:
        raise ArtifactError(f"chunk_rows={chunk_rows} must be >= 1")
    pending: list[np.ndarray] = []
    held = emitted = 0
    for block in blocks:
        at = 0
        while at < len(block):
            take = min(chunk_rows - held, len(block) - at)
            pending.append(block[at:at + take])
            held, at = held + take, at + take
            if held == chunk_rows:
                yield emitted, np.concatenate(pending).astype(np.float32)
                emitted, pending, held = emitted + held, [], 0
    if held:
        yield emitted, np.concatenate(pending).astype(np.float32)
