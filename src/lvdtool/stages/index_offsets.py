"""`lvd index-offsets`: record the image offsets of an images artifact ingested before the shard
index had an `offset` column, so that the training table never reads tar headers.

One sidecar per shard, `_offsets/<shard>.parquet` (key, offset, size; the tar's size in its
metadata, so a sidecar of another tar is ignored), written atomically. Shards are split over the
launcher's ranks (shard i to rank i mod W) and a rerun skips the shards already done: the command
is a restartable, rank-split pass that leaves the artifact's own files and manifest untouched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.artifacts.keys import key_bytes
from lvdtool.artifacts.ranks import rank_info
from lvdtool.console import print_summary, progress
from lvdtool.data.image_table import read_sidecar, scan_locations, write_sidecar


def _has_offsets(images: ImagesArtifact, shard: str) -> bool:
    index = pq.ParquetFile(images.index_path(shard))
    if "offset" not in index.schema_arrow.names:
        return False
    table = index.read(columns=["status", "offset"])
    ok = table.filter(pc.equal(table.column("status"), "ok"))
    return ok.column("offset").null_count == 0


def index_shard(images: ImagesArtifact, shard: str) -> int:
    """Scan one tar's headers and write its sidecar; returns the number of images recorded."""
    table = images.read_index(shard, columns=["key", "status"])
    keys = key_bytes(table.filter(pc.equal(table.column("status"), "ok")).column("key"))
    offsets, sizes = scan_locations(images, shard, keys)
    write_sidecar(images, shard, keys, offsets, sizes)
    return len(keys)


def run(images_path: str | Path) -> dict[str, Any]:
    images = ImagesArtifact(images_path)
    ranks = rank_info()
    counts = {"recorded in the index": 0, "sidecar already written": 0, "sidecars written": 0, "images": 0}
    with progress() as bar:
        task = bar.add_task(f"index-offsets rank {ranks.rank}/{ranks.world_size}", total=len(images.shards))
        for i, shard in enumerate(images.shards):
            if not ranks.owns(i):
                continue
            if _has_offsets(images, shard):
                counts["recorded in the index"] += 1
            elif read_sidecar(images, shard) is not None:
                counts["sidecar already written"] += 1
            else:
                counts["images"] += index_shard(images, shard)
                counts["sidecars written"] += 1
            bar.advance(task)
    print_summary(f"index-offsets {images_path} (rank {ranks.rank} of {ranks.world_size})", counts)
    return counts
