"""Images artifacts written directly (no crawl): many shards fast, with or without tar files."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lvdtool.artifacts import ImageShardWriter, Manifest


def png_bytes(seed: int, size: int = 24) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_images_artifact(root: Path, shards: int, per_shard: int, tars: bool = True, failed_every: int = 0,
                          offsets: bool = True) -> Path:
    """`shards` shards of `per_shard` records (keys are global positions, 12 digits). With `tars`, each
    ok record has a real PNG in its tar; without, only the indexes exist (offsets made up). Every
    `failed_every`-th record is a failed fetch (no image). `offsets=False` writes the index without
    the offset column, as artifacts ingested before lvd recorded it."""
    (root / "shards").mkdir(parents=True)
    records = []
    for s in range(shards):
        name = f"shard-{s:06d}"
        positions = np.arange(s * per_shard, (s + 1) * per_shard)
        keys = np.char.zfill(positions.astype(str), 12)
        ok = np.ones(per_shard, bool) if not failed_every else (positions % failed_every != 0)
        sizes = np.zeros(per_shard, np.int64)
        offs = np.zeros(per_shard, np.int64)
        if tars:
            writer = ImageShardWriter(root / "shards" / f"{name}.tar")
            for i in np.flatnonzero(ok):
                data = png_bytes(int(positions[i]))
                offs[i] = writer.write(str(keys[i]), "png", data, {"key": str(keys[i])})
                sizes[i] = len(data)
            writer.close()
        else:
            sizes[ok] = 1000 + positions[ok] % 7
            offs[ok] = 1536 * np.arange(int(ok.sum()))
        columns = {"key": pa.array(keys.tolist(), pa.string()), "status": pa.array(np.where(ok, "ok", "error").tolist()),
                   "bytes": pa.array(np.where(ok, sizes, 0)),
                   "offset": pa.array(offs, mask=~ok)}
        if not offsets:
            columns.pop("offset")
        pq.write_table(pa.table(columns), root / "shards" / f"{name}.parquet")
        records.append({"name": name, "rows": per_shard})
    Manifest(kind="images", stage="test", config={}, shards=records, complete=True).write(root)
    return root
