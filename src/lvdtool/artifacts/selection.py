"""The `selection` artifact: a subset of an images artifact by key, with per-row columns.

shards/<shard>.parquet   at least a `key` column; dedup adds group/representative/similarity,
                         curate adds seed/query key/similarity/cluster. Manifest extra: `images`.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from lvdtool.artifacts.manifest import Manifest, open_input
from lvdtool.errors import ArtifactError


def read_selection(path: str | Path) -> tuple[Manifest, set[str]]:
    manifest = open_input(path, "selection")
    keys: set[str] = set()
    for shard in manifest.shards:
        p = Path(path) / "shards" / f"{shard['name']}.parquet"
        if not p.exists():
            raise ArtifactError(f"{p}: selection shard {shard['name']} is missing")
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    return manifest, keys
