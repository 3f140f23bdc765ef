"""Pretraining start-up: the training table from tar headers (the old way), from the shard index's
offsets (a build, once per run), and mapped from the run directory (every later start), in one run.

    python benchmarks/loader_startup.py                          # 200 shards x 100 images with real tars
    python benchmarks/loader_startup.py --shards 2000 --per-shard 1000 --no-tars   # 2M rows, indexes only
"""
from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lvdtool.artifacts import ImagesArtifact, ImageShardWriter, Manifest
from lvdtool.data.image_table import build_table, cached_table


def write_artifact(root: Path, shards: int, per_shard: int, tars: bool) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    blob = buf.getvalue()
    (root / "shards").mkdir(parents=True)
    for s in range(shards):
        name = f"shard-{s:06d}"
        keys = [f"{p:012d}" for p in range(s * per_shard, (s + 1) * per_shard)]
        offsets = np.arange(per_shard, dtype=np.int64) * 4096
        if tars:
            writer = ImageShardWriter(root / "shards" / f"{name}.tar")
            offsets = np.array([writer.write(k, "jpg", blob, {"key": k}) for k in keys], dtype=np.int64)
            writer.close()
        table = {"key": keys, "status": ["ok"] * per_shard, "bytes": np.full(per_shard, len(blob)), "offset": offsets}
        pq.write_table(pa.table(table), root / "shards" / f"{name}.parquet")
    Manifest(kind="images", stage="bench", config={}, shards=[{"name": f"shard-{s:06d}", "rows": per_shard}
                                                              for s in range(shards)], complete=True).write(root)
    return root


def without_offsets(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in (dst / "shards").glob("*.parquet"):
        pq.write_table(pq.read_table(p).drop(["offset"]), p)
    return dst


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--per-shard", type=int, default=100)
    ap.add_argument("--no-tars", action="store_true", help="indexes only (the header scan is then not timed)")
    args = ap.parse_args()
    n = args.shards * args.per_shard
    with tempfile.TemporaryDirectory() as tmp:
        root = write_artifact(Path(tmp) / "images", args.shards, args.per_shard, tars=not args.no_tars)
        art = ImagesArtifact(root)
        rows = []
        if not args.no_tars:
            old = ImagesArtifact(without_offsets(root, Path(tmp) / "old"))
            t_scan, scanned = timed(lambda: build_table(old, scan_tars=True))
            rows.append(("tar header scan (before)", t_scan))
        t_build, built = timed(lambda: cached_table(art, None, Path(tmp) / "run" / "data_table", "fp", build=True, scan_tars=False))
        rows.append(("build from index offsets + save", t_build))
        t_load, loaded = timed(lambda: cached_table(art, None, Path(tmp) / "run" / "data_table", "fp", build=False))
        rows.append(("map the saved table (every start)", t_load))
        if not args.no_tars:
            assert np.array_equal(scanned.offsets, loaded.offsets) and np.array_equal(scanned.keys, loaded.keys)
        print(f"{n:,} images over {args.shards:,} shards; table {loaded.bytes_per_row} B/row")
        print(f"| {'step':<36} | {'seconds':>8} | {'us/image':>8} | {'vs first':>8} |")
        print(f"|{'-' * 38}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
        for name, t in rows:
            print(f"| {name:<36} | {t:8.3f} | {t / n * 1e6:8.2f} | {rows[0][1] / t:7.1f}x |")


if __name__ == "__main__":
    main()
