"""Fingerprints of inputs, so a manifest records exactly what a stage read."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """Content hash of a file (input lists are small relative to the work they describe)."""
    return "sha256:" + file_sha256(path)[:32]


def directory_fingerprint(root: str | os.PathLike, suffixes: frozenset[str] | None = None) -> str:
    """Hash of the sorted (relative path, size) list: cheap for millions of files, catches adds/removes/edits."""
    root = Path(root)
    h = hashlib.sha256()
    entries = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if suffixes is not None and Path(name).suffix.lower() not in suffixes:
                continue
            p = Path(dirpath) / name
            entries.append((p.relative_to(root).as_posix(), p.stat().st_size))
    for rel, size in sorted(entries):
        h.update(f"{rel}\0{size}\n".encode())
    return "tree:" + h.hexdigest()[:32]


def shard_list_fingerprint(shards: list[dict]) -> str:
    """An artifact's fingerprint: a hash of its shard list (names and checksums)."""
    h = hashlib.sha256()
    for s in sorted(shards, key=lambda s: s["name"]):
        h.update(f"{s['name']}\0{s.get('checksum', '')}\0{s.get('rows', '')}\n".encode())
    return "shards:" + h.hexdigest()[:32]
