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
    """Content hash of a file: `sha256:` + the full hex digest, the same as `sha256sum FILE` prints
    (input lists are small relative to the work they describe)."""
    return "sha256:" + file_sha256(path)


# The shortest `sha256:` digest lvd has written into manifests: weights fingerprints are 16 hex
# digits, and file fingerprints were 32 before they became the full 64.
COMPARED_SHA256_HEX = 16


def comparable_fingerprint(fingerprint: str) -> str:
    """A fingerprint as resume compares it. `sha256:` ones by their first 16 hex digits (64 bits, far
    past chance agreement between two versions of one input path), so a manifest written with a
    32-hex prefix still resumes now that file fingerprints are the full sha256. Hashes of shard lists
    (`shards:`) and folders (`tree:`) are compared whole."""
    scheme, sep, digest = fingerprint.partition(":")
    if sep and scheme == "sha256":
        return f"sha256:{digest[:COMPARED_SHA256_HEX].lower()}"
    return fingerprint


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
            try:
                size = p.stat().st_size
            except OSError:  # a dangling symlink or unreadable entry: ingested as a failed record
                size = -1
            entries.append((p.relative_to(root).as_posix(), size))
    for rel, size in sorted(entries):
        h.update(f"{rel}\0{size}\n".encode())
    return "tree:" + h.hexdigest()[:32]


def shard_list_fingerprint(shards: list[dict]) -> str:
    """An artifact's fingerprint: a hash of its shard list (names and checksums)."""
    h = hashlib.sha256()
    for s in sorted(shards, key=lambda s: s["name"]):
        h.update(f"{s['name']}\0{s.get('checksum', '')}\0{s.get('rows', '')}\n".encode())
    return "shards:" + h.hexdigest()[:32]
