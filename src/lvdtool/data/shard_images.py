"""An IterableDataset over the shards of an images artifact, batched in the workers.

Worker w of W takes shards w, w+W, ...; it yields batches of decoded, transformed uint8 tensors
and, after the last batch of each shard, an end marker, so the consumer knows a shard is complete
and can commit it. Images that fail to decode are reported in the batch's `failed` list.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from lvdtool.artifacts.images import ImagesArtifact


class ShardBatches(IterableDataset):
    def __init__(
        self,
        images_path: str | Path,
        shards: list[str],
        transform: Callable[[bytes], torch.Tensor],
        batch_size: int,
        keys: set[str] | None = None,
    ) -> None:
        self.images_path, self.shards, self.transform = str(images_path), shards, transform
        self.batch_size, self.keys = batch_size, keys

    def _batch(self, shard: str, keys: list[str], tensors: list[torch.Tensor], failed: list) -> dict[str, Any]:
        images = torch.stack(tensors) if tensors else None
        return {"shard": shard, "keys": keys, "images": images, "failed": failed, "end": False}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        art = ImagesArtifact(self.images_path)
        for shard in self.shards[wid::nw]:
            keys: list[str] = []
            tensors: list[torch.Tensor] = []
            failed: list[tuple[str, str]] = []
            total = 0
            for sample in art.iter_shard(shard, self.keys):
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
