"""The `selection` artifact: a subset of an images artifact by key, with per-row columns.

shards/<shard>.parquet   at least a `key` column; dedup adds group/representative/similarity,
                         curate adds seed/query key/similarity/cluster. Manifest extra: `images`
                         and `images_fingerprint` (the images artifact whose keys these are).

Shard contract: selection shard <S> holds only keys of shard <S> of the images artifact (dedup and
curate write one selection shard per pool embeddings shard, and embed names its shards after the
image shards), so a reader filters an images shard by reading one selection shard and joining on
sorted keys: O(rows of that shard), never a global key set. `Selection` is that reader. A selection
written by other means (its shard names are not the images shards') still works: its keys are then
held once as one sorted numpy bytes array (about key-width bytes per key, no Python object per key).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lvdtool.artifacts.manifest import Manifest, open_input
from lvdtool.artifacts.tables import read_table
from lvdtool.artifacts.verify import images_identity
from lvdtool.errors import ArtifactError, InputError


class Selection:
    """Shard-by-shard view of a selection artifact."""

    def __init__(self, path: str | Path, manifest: Manifest | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest or open_input(self.path, "selection")
        self.rows = {s["name"]: int(s["rows"]) for s in self.manifest.shards}
        self._all: np.ndarray | None = None  # set when the shard names do not follow the images artifact's
        self._checked = False  # check_shards found every shard name among the images shards
        self._matched: set[str] = set()  # artifacts check_images accepted

    @property
    def aligned(self) -> bool:
        """True while shards are joined one by one (False once all keys had to be loaded)."""
        return self._all is None

    @property
    def num_keys(self) -> int:
        return sum(self.rows.values())

    def shard_path(self, shard: str) -> Path:
        return self.path / "shards" / f"{shard}.parquet"

    def check_shards(self, image_shards: list[str], images_path: str | Path) -> bool:
        """Match the selection's shards to the images artifact read with it (`images_path`: that
        artifact, or embeddings made from it). True: shard-by-shard joins. False (a hand-made
        selection whose shard names are not the images shards'): every key is loaded once, sorted.
        A selection recorded as made from other images is refused (see check_images)."""
        if set(self.rows) <= set(image_shards):
            self.check_images(images_path)
            self._checked = True
            return True
        made_from = self.manifest.extra.get("images")
        if made_from and Path(made_from).resolve() != Path(images_path).resolve():
            unknown = sorted(set(self.rows) - set(image_shards))
            raise ArtifactError(f"{self.path}: selection shard {unknown[0]} is not a shard of {images_path} "
                                f"(the selection was made from {made_from})")
        self.check_images(images_path)
        self._load_all()
        return False

    def check_images(self, read_path: str | Path) -> None:
        """Refuse to apply the selection to images other than those its keys name. dedup and curate
        record the images artifact (extra.images) and its fingerprint (extra.images_fingerprint);
        `read_path` is the images artifact read, or an embeddings artifact (then the images it was
        embedded from count). A selection without a fingerprint (hand-made, older lvd) is checked by
        the path it names, if any."""
        if str(read_path) in self._matched:
            return
        made_from = self.manifest.extra.get("images")
        made_fp = self.manifest.extra.get("images_fingerprint")
        images, fingerprint = images_identity(read_path)
        if images is None and fingerprint is None:
            return
        shown = images or read_path
        if made_fp and fingerprint and made_fp != fingerprint:
            raise ArtifactError(f"{self.path}: selection of images {made_from} (fingerprint {made_fp}) applied to "
                                f"{shown} (fingerprint {fingerprint}): its keys name other images; make the "
                                "selection from these images")
        if not made_fp and made_from and images and Path(made_from).resolve() != Path(images).resolve():
            raise ArtifactError(f"{self.path}: selection of images {made_from} applied to {shown}: its keys name "
                                "other images; make the selection from these images")
        self._matched.add(str(read_path))

    def _load_all(self) -> None:
        if self._all is None:
            parts = [self._read_keys(name) for name in self.rows]
            self._all = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype="S1")

    def _read_keys(self, shard: str) -> np.ndarray:
        p = self.shard_path(shard)
        if not p.exists():
            raise ArtifactError(f"{p}: selection shard {shard} is missing")
        col = read_table(p, columns=["key"], what="selection shard").column("key")
        keys = np.array(col.to_pylist(), dtype=bytes) if len(col) else np.zeros(0, dtype="S1")
        if len(keys) != self.rows[shard]:
            raise ArtifactError(f"{p}: {len(keys)} keys but the manifest counts {self.rows[shard]}")
        return keys

    def shard_keys(self, shard: str) -> np.ndarray:
        """The selected keys of one shard, sorted, as a fixed-width bytes array (empty if none); all
        keys when the selection's shards do not follow the images artifact's (see check_shards)."""
        if self._all is None and shard not in self.rows:
            if self._checked:
                return np.zeros(0, dtype="S1")
            self._load_all()  # dedup and curate write every shard, empty ones too: this one is hand-made
        if self._all is not None:
            return self._all
        keys = self._read_keys(shard)
        keys.sort()
        return keys

    def mask(self, shard: str, keys: np.ndarray, where: str | None = None, strict: bool = True) -> np.ndarray:
        """Which of `keys` (any order, bytes or str; all the keys of shard `shard` that the reader
        has, `where` names them) the selection keeps, by a sorted join. `strict`: every selected key
        of the shard must be among them (checked shard by shard when the shards are joined one by one)."""
        selected = self.shard_keys(shard)
        keys = np.asarray(keys).astype(bytes) if np.asarray(keys).dtype.kind != "S" else np.asarray(keys)
        if not len(selected) or not len(keys):
            keep = np.zeros(len(keys), dtype=bool)
        else:
            at = np.minimum(np.searchsorted(selected, keys), len(selected) - 1)
            keep = selected[at] == keys
        if strict and self.aligned and int(keep.sum()) != len(selected):
            missing = np.setdiff1d(selected, keys)
            first = missing[0].decode("utf-8", "replace") if len(missing) else "?"
            raise InputError(f"{self.shard_path(shard)}: {len(missing)} of its keys are not in {where or f'shard {shard}'} "
                             f"(first: {first}; a selection of other images?)")
        return keep


def read_selection(path: str | Path) -> tuple[Manifest, set[str]]:
    """Every selected key as one Python set: only for small selections (tests, reports); stages use
    `Selection`, which filters shard by shard."""
    manifest = open_input(path, "selection")
    keys: set[str] = set()
    for shard in manifest.shards:
        p = Path(path) / "shards" / f"{shard['name']}.parquet"
        if not p.exists():
            raise ArtifactError(f"{p}: selection shard {shard['name']} is missing")
        shard_keys = read_table(p, columns=["key"], what="selection shard").column("key").to_pylist()
        if len(shard_keys) != int(shard["rows"]):
            raise ArtifactError(f"{p}: {len(shard_keys)} keys but the manifest counts {shard['rows']}")
        keys.update(shard_keys)
    return manifest, keys
