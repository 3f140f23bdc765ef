"""An IterableDataset over the shards of an images artifact, batched in the workers.

Worker w of W takes shards w, w+W, ...; it yields batches of decoded, transformed uint8 tensors
and, after the last batch of each shard, an end marker, so the consumer knows a shard is complete
and can commit it. Images that fail to decode are reported in the batch's `failed` list.

With a selection, the worker that reads an images shard joins that shard's ok keys with the
selection (`Selection.mask`: selection shard <S> holds keys of images shard <S>): Python objects for
one shard's rows at most, never a global key set, and a shard with no selected key is not opened.
Every image read is checked against the index by `ImagesArtifact.iter_shard` (the shard and the
first missing or unexpected key are named otherwise).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.artifacts.selection import Selection


def stack_or_list(tensors: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor] | None:
    """One [B,3,H,W] tensor when every image has one shape (crop or square resize), else the list."""
    if not tensors:
        return None
    first = tensors[0].shape
    return torch.stack(tensors) if all(t.shape == first for t in tensors) else tensors


class ShardBatches(IterableDataset):
    def __init__(
        self,
        images_path: str | Path,
        shards: list[str],
        transform: Callable[[bytes], torch.Tensor],
        batch_size: int,
        keys: set[str] | None = None,
        *,
        selection_path: str | Path | None = None,
    ) -> None:
        # `keys`: a small in-memory filter (probe's labelled keys); `selection_path`: a selection
        # artifact of any size, read shard by shard in the worker.
        self.images_path, self.shards, self.transform = str(images_path), shards, transform
        self.batch_size, self.keys = batch_size, keys
        self.selection_path = str(selection_path) if selection_path else None

    def _batch(self, shard: str, keys: list[str], tensors: list[torch.Tensor], failed: list) -> dict[str, Any]:
        return {"shard": shard, "keys": keys, "images": stack_or_list(tensors), "failed": failed, "end": False}

    def _wanted(self, art: ImagesArtifact, selection: Selection | None, shard: str) -> set[str] | None:
        """The keys of this shard to read: its ok keys that the selection keeps (a sorted join), so the
        set is at most one shard's rows whatever the selection's size or shard names. A selected key
        that is not an ok key of the shard is refused, naming both (a selection of other images)."""
        if selection is None:
            return self.keys
        ok = sorted(art.ok_keys(shard) if self.keys is None else art.ok_keys(shard) & self.keys)
        keep = selection.mask(shard, np.array(ok, dtype=bytes), where=f"the ok keys of images shard {shard} of "
                              f"{self.images_path}", strict=self.keys is None)
        return {k for k, m in zip(ok, keep.tolist()) if m}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        art = ImagesArtifact(self.images_path)
        selection = Selection(self.selection_path) if self.selection_path else None
        for shard in self.shards[wid::nw]:
            keys: list[str] = []
            tensors: list[torch.Tensor] = []
            failed: list[tuple[str, str]] = []
            total = 0
            wanted = self._wanted(art, selection, shard)
            samples = art.iter_shard(shard, wanted) if wanted is None or wanted else iter(())
            for sample in samples:
                try:
                    tensors.append(self.transform(sample.data))
                    keys.append(sample.key)
                except Exception as exc:  # a bad sample is a counted outcome, never fatal
                    failed.append((sample.key, f"{type(exc).__name__}: {exc}"))
                total += 1
                if len(tensors) == self.batch_size:
                    yield self._batch(shard, keys, tensors, failed)
                    keys, tensors, failed = [], [], []
            if tensors or failed:
                yield self._batch(shard, keys, tensors, failed)
            yield {"shard": shard, "keys": [], "images": None, "failed": [], "end": True, "total": total}
