"""The `images` artifact: WebDataset tar shards plus one Parquet index per shard.

shards/<shard>.tar      members `<key>.<jpg|png|webp>` and `<key>.json` (the index row as JSON)
shards/<shard>.parquet  one row per input record, whatever its outcome (see INDEX_SCHEMA)
Only rows with status "ok" have an image in the tar.
"""
from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from lvdtool.artifacts.manifest import Manifest, open_input
from lvdtool.artifacts.tables import read_table
from lvdtool.artifacts.verify import verify_shard
from lvdtool.errors import ArtifactError

IMAGE_EXTS = ("jpg", "png", "webp")

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("position", pa.int64()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("content_hash", pa.string()),
        ("phash", pa.uint64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("orig_width", pa.int32()),
        ("orig_height", pa.int32()),
        ("bytes", pa.int64()),
        ("offset", pa.int64()),  # byte offset of the image member's data in the tar (ok rows; null in older artifacts)
        ("ext", pa.string()),
        ("label", pa.string()),
        ("duplicate_of", pa.string()),
    ]
)
CORE_COLUMNS = tuple(INDEX_SCHEMA.names)


def index_table(rows: list[dict[str, Any]], extra_columns: list[str]) -> pa.Table:
    """Build a shard index; carried input columns (caption, ...) are stored as strings after the core ones."""
    arrays = {name: [r.get(name) for r in rows] for name in CORE_COLUMNS}
    table = pa.table(arrays, schema=INDEX_SCHEMA)
    for col in extra_columns:
        values = [r.get("extra", {}).get(col) for r in rows]
        table = table.append_column(col, pa.array([None if v is None else str(v) for v in values], pa.string()))
    return table


class ImageShardWriter:
    """Writes one tar shard (images + per-key JSON) to a temporary path."""

    def __init__(self, tar_path: Path) -> None:
        self.tar_path = tar_path
        self._tar = tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT)
        self.count = 0

    def _add(self, name: str, data: bytes) -> int:
        """Append one member; returns the byte offset of its data in the tar."""
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0  # deterministic bytes: a rerun produces the same tar
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))
        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return self._tar.offset - padded  # the header (PAX records included) precedes the padded data

    def write(self, key: str, ext: str, image_bytes: bytes, meta: dict[str, Any]) -> int:
        """Write the image and its JSON; returns the image data's byte offset (the index's `offset`)."""
        if ext not in IMAGE_EXTS:
            raise ArtifactError(f"key {key}: unsupported image extension {ext!r}")
        offset = self._add(f"{key}.{ext}", image_bytes)
        self._add(f"{key}.json", json.dumps(meta, sort_keys=True, default=str).encode())
        self.count += 1
        return offset

    def close(self) -> None:
        self._tar.close()


def check_member_header(header: bytes, key: str, size: int, path: Path) -> None:
    """Random access reads a member's data by its recorded offset, preceded by its 512-byte tar
    header: the header must be intact (checksum) and name this key with this size, or the shard is
    damaged (or the index no longer describes it)."""
    if len(header) != tarfile.BLOCKSIZE:
        raise ArtifactError(f"{path}: shard is damaged: the tar header of key {key} is cut short")
    intact = named = sized = False
    try:
        stored = int(header[148:156].replace(b"\0", b" ").strip() or b"-1", 8)
        intact = stored == sum(header[:148]) + 8 * 32 + sum(header[156:512])
        name = header[:100].rstrip(b"\0")
        expected = f"{key}.".encode()
        named = bool(name) and (name.startswith(expected) or expected.startswith(name))  # long names are truncated
        sized = header[124] & 0x80 or int(header[124:136].replace(b"\0", b" ").strip() or b"-1", 8) == size
    except ValueError:  # not octal digits
        pass
    if not (intact and named and sized):
        raise ArtifactError(f"{path}: shard is damaged: the tar header of key {key} does not match the index")


def missing_keys(path: Path, shard: str, wanted: set[str], read: set[str]) -> None:
    """Raise naming the shard and the first keys its index lists as ok that were not read from its tar."""
    missing = sorted(wanted - read)
    if missing:
        first = ", ".join(missing[:3])
        raise ArtifactError(f"{path}: shard {shard} is damaged: {len(missing)} of its {len(wanted)} ok keys "
                            f"were not read from the tar (first: {first})")


@dataclass
class ImageSample:
    key: str
    ext: str
    data: bytes
    meta: dict[str, Any]
    shard: str


class ImagesArtifact:
    """Read access to a complete `images` artifact."""

    def __init__(self, path: str | Path, manifest: Manifest | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest or open_input(self.path, "images")
        self.shards = [s["name"] for s in self.manifest.shards]
        self._rows = {s["name"]: int(s["rows"]) for s in self.manifest.shards if "rows" in s}

    def tar_path(self, shard: str) -> Path:
        return self.path / "shards" / f"{shard}.tar"

    def index_path(self, shard: str) -> Path:
        return self.path / "shards" / f"{shard}.parquet"

    def read_index(self, shard: str | None = None, columns: list[str] | None = None) -> pa.Table:
        shards = [shard] if shard is not None else self.shards
        tables = []
        for s in shards:
            p = self.index_path(s)
            if not p.exists():
                raise ArtifactError(f"{p}: index of shard {s} is missing")
            tables.append(read_table(p, columns=columns, what=f"index of shard {s}"))
        if not tables:
            return INDEX_SCHEMA.empty_table() if columns is None else INDEX_SCHEMA.empty_table().select(columns)
        return pa.concat_tables(tables, promote_options="permissive")

    def verify_tar(self, shard: str) -> None:
        """`verify=full` for one shard: its files' sha256 against those its ingest recorded (the
        shard's completion marker and the manifest's checksum; see artifacts/verify.py). Reads the tar."""
        verify_shard(self.path, self._entry(shard), "full")

    def _entry(self, shard: str) -> dict[str, Any]:
        entry = next((s for s in self.manifest.shards if s["name"] == shard), None)
        if entry is None:
            raise ArtifactError(f"{self.path}: no shard {shard} in the manifest")
        return entry

    def ok_keys(self, shard: str) -> set[str]:
        return self._index_keys(shard)[0]

    def _index_keys(self, shard: str) -> tuple[set[str], set[str]]:
        """(ok keys, every key) of one shard's index, which must hold the manifest's row count."""
        t = self.read_index(shard, columns=["key", "status"])
        rows = self._rows.get(shard)
        if rows is not None and len(t) != rows:
            raise ArtifactError(f"{self.index_path(shard)}: {len(t)} rows, but the manifest counts {rows} "
                                f"for shard {shard}")
        keys = t.column("key").to_pylist()
        return {k for k, s in zip(keys, t.column("status").to_pylist()) if s == "ok"}, set(keys)

    def iter_shard(self, shard: str, keys: set[str] | None = None) -> Iterator[ImageSample]:
        """Stream the ok images of one shard in stored order, optionally only `keys`."""
        wanted, listed = self._index_keys(shard)
        if keys is not None:
            wanted &= keys
        path = self.tar_path(shard)
        try:
            tar = tarfile.open(path, "r|")
        except (OSError, tarfile.TarError) as exc:
            raise ArtifactError(f"{path}: unreadable shard ({exc})") from None
        pending: dict[str, dict[str, Any]] = {}
        done: set[str] = set()
        with tar:
            try:
                for member in tar:
                    stem, _, ext = member.name.rpartition(".")
                    if stem not in listed:  # a member renamed, or a tar that is not this index's
                        raise ArtifactError(f"{path}: shard {shard} is damaged: its member {member.name} "
                                            f"names key {stem}, which the index does not list")
                    if stem not in wanted or stem in done or not member.isfile():
                        continue
                    data = tar.extractfile(member).read()
                    entry = pending.setdefault(stem, {})
                    entry[ext] = data
                    img_ext = next((e for e in IMAGE_EXTS if e in entry), None)
                    if img_ext and "json" in entry:
                        try:
                            meta = json.loads(entry["json"])
                        except ValueError:
                            raise ArtifactError(f"{path}: key {stem} has an unreadable JSON member") from None
                        if isinstance(meta, dict) and meta.get("key", stem) != stem:
                            raise ArtifactError(f"{path}: shard {shard} is damaged: the JSON member of key {stem} "
                                                f"is that of key {meta.get('key')}")
                        yield ImageSample(key=stem, ext=img_ext, data=entry[img_ext], meta=meta, shard=shard)
                        done.add(stem)
                        del pending[stem]
            except (OSError, tarfile.TarError) as exc:
                raise ArtifactError(f"{path}: corrupt shard ({exc})") from None
        # the stream reader ends quietly at a damaged header: every ok key of the index must have been read
        missing_keys(path, shard, wanted, done)

    def iter_samples(self, shards: list[str] | None = None, keys: set[str] | None = None) -> Iterator[ImageSample]:
        for shard in shards if shards is not None else self.shards:
            yield from self.iter_shard(shard, keys)
