"""The training data table: every trainable image as (key, shard id, byte offset, byte size).

Built once from the shard indexes (crawl-ingest records each image's data offset in its tar; older
artifacts get the offsets from `lvd index-offsets`, or from one scan of their tar headers), shard by
shard into preallocated numpy arrays, then saved as `.npy` files that every later start (and every
rank, and every DataLoader worker) maps read-only: start-up costs a few file opens whatever N is.

Memory: 28 bytes per row for 12-character keys (key w + shard id 4 + offset 8 + size 4), with no
per-row Python object; the build holds that plus one shard's index at a time.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lvdtool.artifacts.atomic import atomic_write_json
from lvdtool.artifacts.images import IMAGE_EXTS, ImagesArtifact
from lvdtool.artifacts.keys import key_bytes
from lvdtool.artifacts.selection import Selection
from lvdtool.concurrency import ordered_map
from lvdtool.errors import ArtifactError

OFFSETS_DIR = "_offsets"  # sidecar offsets of artifacts ingested before the index had them
TABLE_FILES = ("keys", "shard_ids", "offsets", "sizes")
TABLE_VERSION = 1
READ_THREADS = 4  # Parquet decoding releases the GIL: a few threads overlap the shard reads


@dataclass
class ImageTable:
    """Sorted ok keys of an images artifact and where each image's bytes lie in the tar shards."""

    root: Path
    shard_paths: list[Path]
    keys: np.ndarray  # fixed-width bytes, sorted
    shard_ids: np.ndarray  # int32 index into shard_paths
    offsets: np.ndarray  # int64 byte offset of the image data in its tar
    sizes: np.ndarray  # int32 byte length

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def key(self, row: int) -> str:
        return self.keys[row].decode()

    @property
    def bytes_per_row(self) -> int:
        return sum(getattr(self, name).itemsize for name in TABLE_FILES)

    @classmethod
    def from_artifact(cls, images: ImagesArtifact, selection: Selection | set[str] | None = None,
                      scan_tars: bool = True) -> ImageTable:
        """Build the table in memory. `selection` keeps only its keys (a `Selection` joins shard by
        shard; a Python set is accepted for small tests). `scan_tars=False` refuses to read tar
        headers: a shard without recorded offsets is then an error naming it."""
        return build_table(images, selection, scan_tars)

    def save(self, directory: Path, fingerprint: str) -> None:
        """Write the table as .npy files plus meta.json, atomically (a temp dir renamed into place)."""
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in TABLE_FILES:
            np.save(tmp / f"{name}.npy", getattr(self, name))
        shards = [str(p.relative_to(self.root)) for p in self.shard_paths]
        atomic_write_json(tmp / "meta.json", {"version": TABLE_VERSION, "fingerprint": fingerprint,
                                              "rows": len(self), "shards": shards})
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)

    @classmethod
    def load(cls, directory: Path, root: Path, fingerprint: str) -> ImageTable | None:
        """The saved table, memory-mapped, or None if absent or built from other inputs."""
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != TABLE_VERSION or meta.get("fingerprint") != fingerprint:
            return None
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") for name in TABLE_FILES}
        if any(len(a) != meta["rows"] for a in arrays.values()):
            raise ArtifactError(f"{directory}: the saved training table is damaged (row counts differ); delete it to rebuild")
        return cls(root=root, shard_paths=[root / s for s in meta["shards"]], **arrays)


def cached_table(images: ImagesArtifact, selection: Selection | None, directory: Path, fingerprint: str,
                 build: bool, scan_tars: bool = True) -> ImageTable:
    """Load the table saved in `directory` for these inputs; if absent and `build`, build and save it
    first. Ranks other than the builder call this with build=False after it has finished."""
    table = ImageTable.load(directory, images.path, fingerprint)
    if table is not None:
        return table
    if not build:
        raise ArtifactError(f"{directory}: no training table for these inputs (the building rank did not write it)")
    build_table(images, selection, scan_tars).save(directory, fingerprint)
    loaded = ImageTable.load(directory, images.path, fingerprint)
    assert loaded is not None
    return loaded


# ---------------------------------------------------------------- building
def build_table(images: ImagesArtifact, selection: Selection | set[str] | None = None, scan_tars: bool = True) -> ImageTable:
    """The whole table in this process (single-process runs, tests, the merge's reference)."""
    if isinstance(selection, Selection):
        selection.check_shards(images.shards, images.path)
    keys, shard_ids, offsets, sizes, in_order = build_rows(images, selection, range(len(images.shards)), scan_tars)
    return finish_table(images, keys, shard_ids, offsets, sizes, selection is not None, in_order)


def build_rows(images: ImagesArtifact, selection: Selection | set[str] | None, shard_ids: Iterable[int],
               scan_tars: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(keys, shard ids, offsets, sizes, keys ascend) of the given shards' images, grouped by shard in
    the order given."""
    shard_ids = list(shard_ids)
    builder = _TableBuilder(_row_bound(images, selection, shard_ids))

    def locate(shard_id: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        return (shard_id, *shard_locations(images, images.shards[shard_id], selection, scan_tars))

    # at most 2 x READ_THREADS shards' arrays pending beside the table (pool.map would hold them all)
    for shard_id, keys, offsets, sizes in ordered_map(locate, shard_ids, READ_THREADS, window=2 * READ_THREADS):
        builder.add(shard_id, keys, offsets, sizes)
    return builder.finish()


def finish_table(images: ImagesArtifact, keys: np.ndarray, shard_ids: np.ndarray, offsets: np.ndarray,
                 sizes: np.ndarray, selected: bool = False, in_order: bool | None = None) -> ImageTable:
    """Rows grouped by shard in shard order -> the table, sorted by key (a no-op check for crawl-ingest's
    layout, where shards hold consecutive keys); refuses an empty table and repeated keys."""
    if len(keys) == 0:
        what = "selected ok images" if selected else "ok images"
        raise ArtifactError(f"{images.path}: no {what} to train on")
    if in_order is None:
        in_order = len(keys) < 2 or bool(np.all(keys[1:] > keys[:-1]))
    if not in_order:
        order = np.argsort(keys, kind="stable")
        keys, shard_ids, offsets, sizes = keys[order], shard_ids[order], offsets[order], sizes[order]
        repeated = np.flatnonzero(keys[1:] == keys[:-1])
        if repeated.size:
            raise ArtifactError(f"{images.path}: key {keys[repeated[0]].decode()} appears in more than one shard")
    return ImageTable(images.path, [images.tar_path(s) for s in images.shards], keys, shard_ids, offsets, sizes)


def _row_bound(images: ImagesArtifact, selection: Selection | set[str] | None, shard_ids: list[int]) -> int:
    rows = [int(images.manifest.shards[i].get("rows", 0)) for i in shard_ids]
    if isinstance(selection, Selection):
        if selection.aligned:
            return sum(min(r, selection.rows.get(images.shards[i], 0)) for r, i in zip(rows, shard_ids))
        return min(sum(rows), selection.num_keys)
    if selection is not None:
        return min(sum(rows), len(selection))
    return sum(rows)


# ---------------------------------------------------------------- the rank-split build
def _part_path(parts: Path, rank: int, world: int) -> Path:
    return parts / f"part-{rank:05d}-of-{world:05d}.npz"


def save_part(images: ImagesArtifact, selection: Selection | None, parts: Path, rank: int, world: int,
              scan_tars: bool = True) -> Path:
    """Rank r of W: the rows of shards r, r+W, ... saved atomically (a rerun skips a saved part)."""
    path = _part_path(parts, rank, world)
    if path.exists():
        return path
    if selection is not None:
        selection.check_shards(images.shards, images.path)
    keys, shard_ids, offsets, sizes, _ = build_rows(images, selection, range(rank, len(images.shards), world), scan_tars)
    parts.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    np.savez(tmp, keys=keys, shard_ids=shard_ids, offsets=offsets, sizes=sizes)
    tmp.replace(path)
    return path


def merge_parts(images: ImagesArtifact, parts: Path, world: int, selected: bool = False) -> ImageTable:
    """The W parts -> one table in shard order: each part's rows are scattered to their final place
    (shard s starts after the rows of shards < s), one part in memory at a time beside the result."""
    n_shards = len(images.shards)
    counts = np.zeros(n_shards, dtype=np.int64)
    width = 1
    for r in range(world):
        with np.load(_part_path(parts, r, world)) as part:
            counts += np.bincount(part["shard_ids"], minlength=n_shards)
            width = max(width, part["keys"].dtype.itemsize)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    keys = np.zeros(total, dtype=f"S{width}")
    shard_ids = np.zeros(total, dtype=np.int32)
    offsets = np.zeros(total, dtype=np.int64)
    sizes = np.zeros(total, dtype=np.int32)
    for r in range(world):
        with np.load(_part_path(parts, r, world)) as part:
            ids = part["shard_ids"]
            first = np.searchsorted(ids, ids)  # rows of a shard are contiguous and shards ascend within a part
            dest = starts[ids] + (np.arange(len(ids)) - first)
            keys[dest], shard_ids[dest], offsets[dest], sizes[dest] = part["keys"], ids, part["offsets"], part["sizes"]
    return finish_table(images, keys, shard_ids, offsets, sizes, selected)


def parts_dir(directory: Path, fingerprint: str) -> Path:
    """Where the ranks' parts of a table for these inputs are saved until rank 0 has merged them."""
    return directory.with_name(f".{directory.name}.parts-{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}")


def distributed_table(images: ImagesArtifact, selection: Selection | None, directory: Path, fingerprint: str,
                      rank: int, world: int, run_on_all, run_on_main, scan_tars: bool = True) -> ImageTable:
    """Every rank reads the indexes of its share of the shards, rank 0 merges the parts and saves the
    table, every rank maps it. A saved table for these inputs is mapped directly (every restart).
    `run_on_all` / `run_on_main` run a step on every rank / on rank 0 and raise a failure on all ranks."""
    table = ImageTable.load(directory, images.path, fingerprint)
    if table is not None:
        return table
    parts = parts_dir(directory, fingerprint)
    run_on_all(lambda: save_part(images, selection, parts, rank, world, scan_tars))

    def merge() -> None:
        merge_parts(images, parts, world, selection is not None).save(directory, fingerprint)
        shutil.rmtree(parts, ignore_errors=True)

    run_on_main(merge)
    loaded = ImageTable.load(directory, images.path, fingerprint)
    if loaded is None:
        raise ArtifactError(f"{directory}: the training table written by rank 0 is not visible here (a shared filesystem is needed)")
    return loaded


class _TableBuilder:
    """Appends per-shard arrays into arrays preallocated at an upper bound of the row count, then
    shrinks them in place: the build never holds two copies of the table."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 0)
        self.n = 0
        self.in_order = True  # keys ascend within and across the shards added so far
        self.keys = np.zeros(0, dtype="S1")  # allocated at the first shard's key width
        self.shard_ids = np.zeros(self.capacity, dtype=np.int32)
        self.offsets = np.zeros(self.capacity, dtype=np.int64)
        self.sizes = np.zeros(self.capacity, dtype=np.int32)

    def add(self, shard_id: int, keys: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> None:
        m = len(keys)
        if not m:
            return
        if self.n + m > self.capacity:
            raise ArtifactError(f"shard {shard_id}: more ok rows than the manifest counts ({self.n + m} > {self.capacity})")
        if not len(self.keys):
            self.keys = np.zeros(self.capacity, dtype=keys.dtype)
        elif keys.dtype.itemsize > self.keys.dtype.itemsize:
            self.keys = self.keys.astype(keys.dtype)  # wider keys than seen so far: rare, one copy
        if self.in_order:  # checked per shard: no array over all N rows
            self.in_order = bool(np.all(keys[1:] > keys[:-1])) and (self.n == 0 or bool(keys[0] > self.keys[self.n - 1]))
        stop = self.n + m
        self.keys[self.n:stop] = keys
        self.shard_ids[self.n:stop] = shard_id
        self.offsets[self.n:stop] = offsets
        self.sizes[self.n:stop] = sizes
        self.n = stop

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """The arrays shrunk to the rows added, and whether their keys already ascend."""
        for name in TABLE_FILES:
            if len(getattr(self, name)) != self.n:
                getattr(self, name).resize(self.n, refcheck=False)
        return self.keys, self.shard_ids, self.offsets, self.sizes, self.in_order


def shard_locations(images: ImagesArtifact, shard: str, selection: Selection | set[str] | None = None,
                    scan_tars: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, offsets, sizes) of the ok (and selected) images of one shard, in index order."""
    path = images.index_path(shard)
    if not path.exists():
        raise ArtifactError(f"{path}: index of shard {shard} is missing")
    try:
        index = pq.ParquetFile(path)
        names = index.schema_arrow.names
        columns = ["key", "status", "bytes"] + (["offset"] if "offset" in names else [])
        table = index.read(columns=columns, use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"{path}: unreadable shard index ({exc})") from None
    table = table.filter(pc.equal(table.column("status"), "ok"))
    keys = key_bytes(table.column("key"))
    wanted = _selected(selection, shard, keys)
    if wanted is not None:
        table, keys = table.filter(pa.array(wanted)), keys[wanted]
    if "offset" in names and table.column("offset").null_count == 0:
        offsets = table.column("offset").to_numpy().astype(np.int64)
        sizes = table.column("bytes").to_numpy().astype(np.int32)
        return keys, offsets, sizes
    return _sidecar_or_scan(images, shard, keys, scan_tars)


def _selected(selection: Selection | set[str] | None, shard: str, keys: np.ndarray) -> np.ndarray | None:
    if selection is None:
        return None
    if isinstance(selection, Selection):
        return selection.mask(shard, keys)
    return np.isin(keys, np.array(sorted(selection), dtype=bytes)) if selection else np.zeros(len(keys), bool)


# ---------------------------------------------------------------- artifacts without recorded offsets
def sidecar_path(images: ImagesArtifact, shard: str) -> Path:
    return images.path / OFFSETS_DIR / f"{shard}.parquet"


def _tar_bytes(images: ImagesArtifact, shard: str) -> int | None:
    """The tar's size: tars of a complete artifact never change, so a sidecar for another size is stale."""
    try:
        return images.tar_path(shard).stat().st_size
    except OSError:
        return None


def read_sidecar(images: ImagesArtifact, shard: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The offsets recorded by `lvd index-offsets` for a shard, or None (absent or for another tar)."""
    path = sidecar_path(images, shard)
    if not path.exists():
        return None
    table = pq.read_table(path)
    recorded = (table.schema.metadata or {}).get(b"tar_bytes")
    if recorded is None or int(recorded) != _tar_bytes(images, shard):
        return None
    return (key_bytes(table.column("key")), table.column("offset").to_numpy().astype(np.int64),
            table.column("size").to_numpy().astype(np.int32))


def write_sidecar(images: ImagesArtifact, shard: str, keys: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> Path:
    path = sidecar_path(images, shard)
    path.parent.mkdir(exist_ok=True)
    table = pa.table({"key": pa.array([k.decode() for k in keys], pa.string()), "offset": offsets, "size": sizes})
    table = table.replace_schema_metadata({"tar_bytes": str(_tar_bytes(images, shard))})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def scan_tar(path: Path, wanted: Iterable[bytes]) -> dict[bytes, tuple[int, int]]:
    """key -> (data offset, size) of the image member of each wanted key, from the tar headers."""
    wanted = set(wanted)
    found: dict[bytes, tuple[int, int]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                stem, _, ext = member.name.rpartition(".")
                key = stem.encode()
                if ext in IMAGE_EXTS and key in wanted and member.isfile():
                    found[key] = (member.offset_data, member.size)
    except (OSError, tarfile.TarError) as exc:
        raise ArtifactError(f"{path}: unreadable shard ({exc})") from None
    return found


def _sidecar_or_scan(images: ImagesArtifact, shard: str, keys: np.ndarray,
                     scan_tars: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    side = read_sidecar(images, shard)
    if side is not None:
        side_keys, side_offsets, side_sizes = side
        order = np.argsort(side_keys)
        at = np.searchsorted(side_keys, keys, sorter=order)
        at = order[np.minimum(at, len(order) - 1)] if len(order) else at
        if len(keys) and (not len(order) or not bool(np.all(side_keys[at] == keys))):
            raise ArtifactError(f"{sidecar_path(images, shard)}: lacks ok keys of shard {shard}; rerun lvd index-offsets")
        return keys, side_offsets[at], side_sizes[at]
    if not scan_tars:
        raise ArtifactError(f"{images.index_path(shard)}: shard {shard} has no recorded image offsets "
                            f"(ingested before lvd recorded them); run: lvd index-offsets --images {images.path}")
    return (keys, *scan_locations(images, shard, keys))


def scan_locations(images: ImagesArtifact, shard: str, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, sizes) of `keys` from one scan of the shard's tar headers; every key must be there."""
    found = scan_tar(images.tar_path(shard), keys.tolist())
    missing = [k for k in keys.tolist() if k not in found]
    if missing:
        raise ArtifactError(f"{images.tar_path(shard)}: {len(missing)} ok keys of its index have no image in the tar "
                            f"(first: {missing[0].decode()})")
    offsets = np.array([found[k][0] for k in keys.tolist()], dtype=np.int64)
    sizes = np.array([found[k][1] for k in keys.tolist()], dtype=np.int32)
    return offsets, sizes
