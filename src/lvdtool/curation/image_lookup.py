"""Images by key for report pictures, read from the images artifact an embeddings manifest names.

Reports must not fail because pictures are unavailable (embeddings made elsewhere, images moved):
a missing artifact or key gives a grey placeholder tile and a note, never an error. Nor may they
show other images under these keys: an images artifact whose fingerprint is not the one the
embeddings recorded (re-ingested since) is unavailable too, with that note. Every image shown is
read by `ImagesArtifact.iter_shard`, which checks the tar against the index.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw

from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.artifacts.manifest import Manifest
from lvdtool.artifacts.verify import images_input
from lvdtool.curation.keyed_rows import key_bytes
from lvdtool.errors import ArtifactError


class ImageLookup:
    """Fetch image bytes by key, reading only the tar shards that hold the wanted keys."""

    def __init__(self, images_path: str | None, fingerprint: str | None = None) -> None:
        """`fingerprint`: the images artifact's as the embeddings recorded it (None: not checked)."""
        self.path = images_path
        self.problem: str | None = None
        self._artifact: ImagesArtifact | None = None
        if not images_path:
            self.problem = "the embeddings manifest names no images artifact"
        elif not Path(images_path).exists():
            self.problem = f"images artifact {images_path} not found"
        else:
            try:
                self._artifact = ImagesArtifact(images_path)
            except ArtifactError as exc:
                self.problem = str(exc)
            if self._artifact is not None and fingerprint and self._artifact.manifest.fingerprint != fingerprint:
                self.problem = (f"images artifact {images_path} is not the one embedded (fingerprint "
                                f"{self._artifact.manifest.fingerprint}, recorded {fingerprint}): re-ingested since?")
                self._artifact = None

    @classmethod
    def of_embeddings(cls, manifest: Manifest) -> "ImageLookup":
        """The images an embeddings artifact was made from, checked against the fingerprint it recorded."""
        ref = images_input(manifest)
        return cls(manifest.extra.get("images"), ref.fingerprint if ref else None)

    @property
    def available(self) -> bool:
        return self._artifact is not None

    def _shards_of(self, wanted: set[str]) -> dict[str, set[str]]:
        """The shard of each wanted ok key, by scanning the index shard by shard (key and status
        columns) until all are found: memory O(wanted + one index shard), no dict of every key."""
        targets = np.array(sorted(wanted), dtype=bytes)
        by_shard: dict[str, set[str]] = {}
        left = len(targets)
        for shard in self._artifact.shards:
            if not left:
                break
            table = self._artifact.read_index(shard, columns=["key", "status"])
            keys = key_bytes(table.column("key"))
            if not len(keys):
                continue
            pos = np.minimum(np.searchsorted(targets, keys), len(targets) - 1)
            ok = np.asarray(table.column("status").to_numpy(zero_copy_only=False) == "ok")
            hit = np.flatnonzero((targets[pos] == keys) & ok)
            if len(hit):
                by_shard[shard] = {k.decode("utf-8") for k in keys[hit]}
                left -= len(hit)
        return by_shard

    def fetch(self, keys: Iterable[str]) -> dict[str, bytes]:
        wanted = {k for k in keys if k is not None}
        if not self.available or not wanted:
            return {}
        out: dict[str, bytes] = {}
        for shard, mine in sorted(self._shards_of(wanted).items()):
            for sample in self._artifact.iter_shard(shard, mine):
                out[sample.key] = sample.data
        return out


def placeholder(text: str, size: int = 128) -> Image.Image:
    """A grey tile standing in for an image that cannot be shown."""
    tile = Image.new("RGB", (size, size), (70, 70, 70))
    ImageDraw.Draw(tile).text((6, size // 2 - 6), text[: size // 7], fill=(230, 230, 230))
    return tile


def tile(images: dict[str, bytes], key: str | None, size: int = 128) -> bytes | Image.Image:
    if key is not None and key in images:
        return images[key]
    return placeholder("no image" if key is None else f"missing {key}", size)
