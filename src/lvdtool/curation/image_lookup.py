"""Images by key for report pictures, read from the images artifact an embeddings manifest names.

Reports must not fail because pictures are unavailable (embeddings made elsewhere, images moved):
a missing artifact or key gives a grey placeholder tile and a note, never an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from PIL import Image, ImageDraw

from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.errors import ArtifactError


class ImageLookup:
    """Fetch image bytes by key, reading only the tar shards that hold the wanted keys."""

    def __init__(self, images_path: str | None) -> None:
        self.path = images_path
        self.problem: str | None = None
        self._artifact: ImagesArtifact | None = None
        self._shard_of: dict[str, str] | None = None
        if not images_path:
            self.problem = "the embeddings manifest names no images artifact"
        elif not Path(images_path).exists():
            self.problem = f"images artifact {images_path} not found"
        else:
            try:
                self._artifact = ImagesArtifact(images_path)
            except ArtifactError as exc:
                self.problem = str(exc)

    @property
    def available(self) -> bool:
        return self._artifact is not None

    def _shards(self) -> dict[str, str]:
        if self._shard_of is None:
            table = self._artifact.read_index(columns=["key", "shard", "status"])
            self._shard_of = {k: s for k, s, st in zip(table.column("key").to_pylist(), table.column("shard").to_pylist(),
                                                       table.column("status").to_pylist()) if st == "ok"}
        return self._shard_of

    def fetch(self, keys: Iterable[str]) -> dict[str, bytes]:
        wanted = {k for k in keys if k is not None}
        if not self.available or not wanted:
            return {}
        shard_of = self._shards()
        by_shard: dict[str, set[str]] = {}
        for k in wanted:
            if k in shard_of:
                by_shard.setdefault(shard_of[k], set()).add(k)
        out: dict[str, bytes] = {}
        for shard in sorted(by_shard):
            for sample in self._artifact.iter_shard(shard, by_shard[shard]):
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
