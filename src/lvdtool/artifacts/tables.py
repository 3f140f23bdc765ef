"""Parquet tables written atomically (selections, dedup groups, per-shard results)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lvdtool.artifacts.atomic import atomic_path
from lvdtool.errors import ArtifactError


def write_parquet(table: pa.Table, path: str | Path, compression: str = "zstd") -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression)


def write_parquet_to(table: pa.Table, tmp_path: Path, compression: str = "zstd") -> Path:
    """Write to an explicit temporary path (for ShardedOutput.commit)."""
    pq.write_table(table, tmp_path, compression=compression)
    return tmp_path


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: table is missing")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ArtifactError(f"{path}: unreadable Parquet table ({exc})") from None
