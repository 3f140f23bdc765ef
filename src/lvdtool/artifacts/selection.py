"""The `selection` artifact: a subset of an images artifact by key, with per-row columns.

shards/<shard>.parquet   at least a `key` column; dedup adds group/representative/similarity,
                         curate adds seed/query key/similarity/cluster. Manifest extra: `images`.

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
from lvdtool.errors import ArtifactError


class Selection:
    """Shard-by-shard view of a selection artifact."""

    def __init__(self, path: str | Path, manifest: Manifest | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest or open_input(self.path, "selection")
        self.rows = {s["name"]: int(s["rows"]) for s in self.manifest.shards}
        self._all: np.ndarray | None = None  # set when the shard names do not follow the images artifact's
        self._checked = False  # check_shards found every shard name among the images shards

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
        """Match the selection's shards to the images artifact read with it. True: shard-by-shard joins.
        False (a hand-made selection whose shard names are not the images shards'): every key is
        loaded once, sorted. A selection recorded as made from another images artifact is refused."""
        if set(self.rows) <= set(image_shards):
            self._checked = True
            return True
        made_from = self.manifest.extra.get("images")
        if made_from and Path(made_from).resolve() != Path(images_path).resolve():
            unknown = sorted(set(self.rows) - set(image_shards))
            raise ArtifactError(f"{self.path}: selection shard {unknown[0]} is not a shard of {images_path} "
                                f"(the selection was made from {made_from})")
        self._load_all()
        return False

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

    def mask(self, shard: str, keys: np.ndarray) -> np.ndarray:
        """Which of `keys` (any order, bytes or str) the selection keeps, by a sorted join."""
        selected = self.shard_keys(shard)
        keys = np.asarray(keys).astype(bytes) if np.asarray(keys).dtype.kind != "S" else np.asarray(keys)
        if not len(selected) or not len(keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(selected, keys), len(selected) - 1)
        return selected[at] == keys


def read_selection(path: str | Path) -> tuple[Manifest, set[str]]:
    """Every selected key as one Python set: only for small selections (tests, reports); stages use
    `Selection`, which filters shard by shard."""
    manifest = open_input(path, "selection")
    keys: set[str] = set()
    for shard in manifest.shards:
        p = Path(path) / "shards" / f"{shard['name']}.parquet"
        if not p.exists():
            raise ArtifactError(f"{p}: selection shard {shard['name']} is missing")
        keys.update(read_table(p, columns=["key"], what="selection shard").column("key").to_pylist())
    return manifest, keys
