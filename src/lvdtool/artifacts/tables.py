"""Parquet tables written atomically (selections, dedup groups, per-shard results)."""
from __future__ import annotations

import re
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


def _reason(exc: BaseException, path: Path) -> str:
    """pyarrow's first line, without the path it repeats ("Could not open Parquet input source '<path>': ")."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^Could not open Parquet input source '[^']*':\s*", "", text).replace(str(path), "").strip() or type(exc).__name__


def read_table(path: str | Path, columns: list[str] | None = None, what: str = "Parquet table") -> pa.Table:
    """`pq.read_table`, with a missing, truncated or corrupt file refused as one ArtifactError naming it."""
    path = Path(path)
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: {what} is missing") from None
    except (pa.ArrowException, OSError) as exc:  # ArrowInvalid (bad footer, no such column), ArrowIOError, ...
        raise ArtifactError(f"{path}: unreadable {what} ({_reason(exc, path)})") from None


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: table is missing")
    return read_table(path, columns=columns)
