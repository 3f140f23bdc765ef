"""What a stage checks of an input artifact before it reads it, and whose images a selection names.

A shard's writer recorded what it wrote: its completion marker `_work/<shard>.done.json` holds the
bytes and sha256 of each file it committed, and the manifest's shard entry holds the rows, the
files' total bytes and a `checksum` over every file's sha256 (files added at finalisation, such as
crawl-ingest's deduplicated index, are covered by the checksum only).

verify=size (the default, cheap): every file of the shard exists and has its recorded size, the
  files add up to the manifest's bytes, and the shard's Parquet file holds the manifest's row count
  (read from its footer). Per shard: a few stat calls, one small JSON and a Parquet footer,
  whatever the data's size.
verify=full: also the sha256 of every file, against the marker and the manifest's checksum. Reads
  every input byte once (sha256 runs at about 1-2 GB/s per core; READ_THREADS files at a time).
Members inside the files (tar members, Parquet keys) are checked by the readers as they read.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from lvdtool.artifacts.fingerprint import file_sha256
from lvdtool.artifacts.manifest import MANIFEST_NAME, InputRef, Manifest, read_manifest
from lvdtool.artifacts.sharded_output import DONE_SUFFIX, WORK_DIR
from lvdtool.concurrency import ordered_map
from lvdtool.errors import ArtifactError, ConfigError

LEVELS = ("size", "full")
READ_THREADS = 4  # sha256 releases the GIL: a few files hashed at once


def check_level(key: str, level: str) -> None:
    if level not in LEVELS:
        raise ConfigError(f"{key}={level!r}: expected size or full")


def _marker_files(root: Path, name: str) -> dict[str, dict[str, Any]] | None:
    """The files the shard's completion marker records ({path: {bytes, sha256}}), or None."""
    try:
        files = json.loads((root / WORK_DIR / f"{name}{DONE_SUFFIX}").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return files if isinstance(files, dict) else None


def _listed_files(entry: dict[str, Any], recorded: dict[str, dict] | None) -> list[str]:
    """The shard's files a reader reads: the manifest's list, else the marker's, else the shard's Parquet."""
    listed = [f for f in entry.get("files") or [] if not f.startswith(WORK_DIR + "/")]
    if not listed and recorded:
        listed = sorted(f for f in recorded if not f.startswith(WORK_DIR + "/"))
    return listed or [f"shards/{entry['name']}.parquet"]


def _checksum(sha: dict[str, str]) -> str:
    """ShardRecord.checksum over {path: sha256}."""
    h = hashlib.sha256()
    for fname in sorted(sha):
        h.update(f"{fname}\0{sha[fname]}\n".encode())
    return h.hexdigest()[:32]


def verify_shard(root: str | Path, entry: dict[str, Any], level: str = "size") -> None:
    """Check one shard's files against its manifest entry and marker; one line naming shard and file."""
    root = Path(root)
    name = entry["name"]
    recorded = _marker_files(root, name)
    listed = _listed_files(entry, recorded)
    sizes = {}
    for rel in listed:
        p = root / rel
        try:
            sizes[rel] = p.stat().st_size
        except OSError:
            raise ArtifactError(f"{p}: file of shard {name} is missing") from None
        meta = (recorded or {}).get(rel)
        if meta is not None and sizes[rel] != meta.get("bytes"):
            raise ArtifactError(f"{p}: {sizes[rel]} bytes, but {meta.get('bytes')} were written for shard {name} "
                                "(changed since)")
    if recorded is not None and "bytes" in entry:
        total = sum(sizes.values()) + sum(m["bytes"] for f, m in recorded.items() if f not in sizes)
        if total != entry["bytes"]:
            unrecorded = [f for f in listed if f not in recorded] or listed
            raise ArtifactError(f"{root / unrecorded[0]}: shard {name}'s files hold {total} bytes, the manifest "
                                f"records {entry['bytes']} (changed since)")
    for rel in listed:
        if rel.endswith(".parquet"):
            _check_rows(root / rel, name, entry)
    if level == "full":
        _check_sha256(root, name, entry, listed, recorded)


def _check_rows(path: Path, name: str, entry: dict[str, Any]) -> None:
    if "rows" not in entry:
        return
    try:
        rows = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise ArtifactError(f"{path}: unreadable Parquet file of shard {name} ({exc})") from None
    if rows != int(entry["rows"]):
        raise ArtifactError(f"{path}: {rows} rows, but the manifest counts {entry['rows']} for shard {name}")


def _check_sha256(root: Path, name: str, entry: dict[str, Any], listed: list[str],
                  recorded: dict[str, dict] | None) -> None:
    computed = {rel: file_sha256(root / rel) for rel in listed}
    for rel, sha in computed.items():
        meta = (recorded or {}).get(rel)
        if meta is not None and sha != meta.get("sha256"):
            raise ArtifactError(f"{root / rel}: sha256 differs from the one recorded when shard {name} was written "
                                "(damaged or changed since)")
    checksum = entry.get("checksum")
    if not checksum:
        return
    everything = {f: m["sha256"] for f, m in (recorded or {}).items()}
    everything.update(computed)
    if _checksum(everything) == checksum:
        return
    if recorded is None:
        raise ArtifactError(f"{root / WORK_DIR / (name + DONE_SUFFIX)}: missing, and the files of shard {name} alone "
                            "do not give the manifest's checksum (verify=full needs the writer's markers)")
    unrecorded = [f for f in listed if f not in recorded] or listed
    raise ArtifactError(f"{root / unrecorded[0]}: sha256 does not give shard {name}'s checksum in the manifest "
                        "(damaged or changed since)")


def verify_input(root: str | Path, manifest: Manifest, level: str = "size", shards: Iterable[str] | None = None) -> None:
    """Check the shards (all, or the named ones) of an input artifact before reading them."""
    check_level("verify", level)
    wanted = None if shards is None else set(shards)
    entries = [e for e in manifest.shards if wanted is None or e["name"] in wanted]
    if level == "full":  # one pass over the bytes: a few shards at once
        for _ in ordered_map(lambda e: verify_shard(root, e, level), entries, READ_THREADS):
            pass
    else:
        for entry in entries:
            verify_shard(root, entry, level)


# ---------------------------------------------------------------- whose images
def images_input(manifest: Manifest) -> InputRef | None:
    """The images artifact an embeddings artifact was made from, as its manifest records it."""
    return next((i for i in manifest.inputs if i.kind == "images" and i.role == "images"), None)


def images_identity(path: str | Path) -> tuple[str | None, str | None]:
    """(images path, fingerprint) of an images artifact, or of the images an embeddings artifact was
    made from (as recorded); (None, None) for anything else."""
    manifest = read_manifest(path)
    if manifest.kind == "images":
        return str(Path(path)), manifest.fingerprint if manifest.complete else None
    if manifest.kind == "embeddings":
        ref = images_input(manifest)
        return manifest.extra.get("images") or (ref.path if ref else None), ref.fingerprint if ref else None
    return None, None


def checked_images(emb_path: str | Path, manifest: Manifest) -> str | None:
    """The images artifact named by an embeddings manifest (extra.images), refused when it is there
    but is not the one that was embedded (re-ingested since: its fingerprint differs from the one the
    embeddings recorded). None when the manifest names none; an absent artifact is left to the reader."""
    images = manifest.extra.get("images")
    ref = images_input(manifest)
    if not images or ref is None or not (Path(images) / MANIFEST_NAME).exists():
        return images
    current = read_manifest(images)
    found = current.fingerprint if current.complete else "incomplete"
    if found != ref.fingerprint:
        raise ArtifactError(f"{images}: images artifact is not the one {emb_path} was embedded from (fingerprint "
                            f"{found}, the embeddings recorded {ref.fingerprint}): re-ingested since? re-embed it")
    return images
