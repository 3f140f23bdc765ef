"""The pretraining data loader: random access into an `images` artifact, multi-crop batches.

At start, every rank maps the `ImageTable` (data/image_table.py): the ok keys of the artifact
(optionally only those of a selection), sorted, with the byte range of each image inside its tar
shard, built once from the shard indexes, so that loading a sample is two positional reads (its tar header, then its bytes). The `PretrainSampler`
says which rows a rank loads at each iteration; DataLoader workers decode them, apply the
multi-crop augmentation with a generator seeded from the sample's global position, and collate
the batch with its iBOT masks. Batches therefore depend on (seed, data position) only: not on
the number of workers, and not on whether the run was interrupted.
"""

from __future__ import annotations

import os
import tarfile
from collections import OrderedDict
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lvdtool.artifacts.images import ImagesArtifact, check_member_header
from lvdtool.artifacts.selection import Selection
from lvdtool.artifacts.verify import check_level, verify_input
from lvdtool.data.augment import MultiCropAugment
from lvdtool.data.augment.collate import attach_masks
from lvdtool.data.decode import decode_rgb, to_uint8_chw
from lvdtool.data.image_table import ImageTable
from lvdtool.data.resolution import CropVariant, ResolutionChoice
from lvdtool.data.sampler import STREAM_AUGMENT, STREAM_MASKS, BatchRequest, DataCursor, PretrainSampler, derive_seed
from lvdtool.errors import ArtifactError, InputError
from lvdtool.ssl.masking import BatchMaskSampler


MAX_OPEN_SHARDS = 64  # per process: a worker that has touched thousands of shards keeps this many open


class ImageReader:
    """Reads image bytes by table row; opens shard files lazily, per process, and keeps at most
    `max_open` of them open (least recently used closed first), so a long run over many shards
    never reaches the process's file limit."""

    def __init__(self, table: ImageTable, max_open: int = MAX_OPEN_SHARDS) -> None:
        if max_open < 1:
            raise InputError(f"ImageReader: max_open={max_open} must be >= 1")
        self.table = table
        self.max_open = int(max_open)
        self._files: OrderedDict[int, BinaryIO] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table, "max_open": self.max_open, "_files": OrderedDict()}  # handles stay here

    def _handle(self, shard_id: int) -> BinaryIO:
        handle = self._files.get(shard_id)
        if handle is not None:
            self._files.move_to_end(shard_id)
            return handle
        while len(self._files) >= self.max_open:
            self._files.popitem(last=False)[1].close()
        handle = self._files[shard_id] = open(self.table.shard_paths[shard_id], "rb", buffering=0)
        return handle

    def open_files(self) -> int:
        return len(self._files)

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()

    def read(self, row: int) -> bytes:
        shard_id = int(self.table.shard_ids[row])
        # Positional reads (pread): a DataLoader worker forked from a process that already had this
        # shard open shares the descriptor's file offset with it, so seek + read could race.
        fd = self._handle(shard_id).fileno()
        offset, size = int(self.table.offsets[row]), int(self.table.sizes[row])
        start = max(offset - tarfile.BLOCKSIZE, 0)  # the member's header, checked against the index
        header = os.pread(fd, tarfile.BLOCKSIZE, start)
        check_member_header(header, self.table.key(row), size, self.table.shard_paths[shard_id])
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise ArtifactError(f"{self.table.shard_paths[shard_id]}: key {self.table.key(row)} is truncated")
        return data


def check_training_inputs(images: ImagesArtifact, selection: Selection | None, level: str, env: Any = None) -> None:
    """At every start, before the table is built or mapped: each rank checks its share of the images
    shards (r, r+W, ...) against what ingest recorded (`level`: size or full, see artifacts/verify.py),
    rank 0 the selection's shards, and every rank that the selection is one of these images. `env`
    (a DistEnv) makes a failure on one rank every rank's error."""
    rank, world = (env.rank, env.world_size) if env is not None else (0, 1)

    def check() -> None:
        check_level("data.verify", level)
        verify_input(images.path, images.manifest, level, images.shards[rank::world])
        if selection is not None:
            if rank == 0:
                verify_input(selection.path, selection.manifest, level)
            selection.check_images(images.path)

    env.run_on_all(check) if env is not None else check()


class PretrainBatches(Dataset):
    """`dataset[BatchRequest]` -> collated multi-crop batch (see `collate_multicrop`) plus its
    iteration, epoch and first global position.

    With several crop variants (a mixed-resolution phase), each iteration uses the one that
    `choice` draws for it, a function of (seed, iteration) only: every rank's share of the
    batch has the same crop sizes, and a resumed run draws the same sequence."""

    def __init__(
        self,
        table: ImageTable,
        augment: MultiCropAugment,
        mask_sampler: BatchMaskSampler,
        seed: int,
        decode_min_side: int | None = None,
        variants: list[CropVariant] | None = None,
        choice: ResolutionChoice | None = None,
    ) -> None:
        self.reader = ImageReader(table)
        self.augment = augment
        self.mask_sampler = mask_sampler
        self.seed = int(seed)
        self.decode_min_side = decode_min_side
        self.variants = variants or [CropVariant(augment, mask_sampler, decode_min_side)]
        self.choice = choice or ResolutionChoice([1.0] * len(self.variants), seed)
        if len(self.choice.probs) != len(self.variants):
            raise InputError(f"PretrainBatches: {len(self.variants)} crop variants, {len(self.choice.probs)} probabilities")

    def image(self, row: int, min_side: int | None = None) -> torch.Tensor:
        data = self.reader.read(row)
        try:
            return to_uint8_chw(decode_rgb(data, min_side if min_side is not None else self.decode_min_side))
        except Exception as exc:  # the ingest validated it: a failure here is a damaged artifact
            key = self.reader.table.key(row)
            raise ArtifactError(f"{self.reader.table.root}: key {key} does not decode ({type(exc).__name__})") from None

    def generator(self, epoch: int, position: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, STREAM_AUGMENT, epoch, position))

    def sample(self, row: int, epoch: int, position: int) -> dict[str, list[torch.Tensor]]:
        """The crops of one sample (what `__getitem__` computes for it, batched)."""
        return self.augment(self.image(row), self.generator(epoch, position))

    def __getitem__(self, request: BatchRequest) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(request, BatchRequest):
            raise InputError(f"PretrainBatches is indexed by BatchRequest, got {type(request).__name__}")
        variant = self.variants[self.choice.index(request.iteration)]
        images = [self.image(int(row), variant.decode_min_side) for row in request.rows]
        generators = [self.generator(request.epoch, request.first_position + k) for k in range(len(images))]
        crops = variant.augment.batch(images, generators)
        rng = np.random.default_rng(derive_seed(self.seed, STREAM_MASKS, request.epoch, request.first_position))
        batch = attach_masks(crops["global_crops"], crops["local_crops"], variant.mask_sampler, rng)
        if "gram_crops" in crops:
            batch["gram_crops"] = crops["gram_crops"]
        batch.update(iteration=request.iteration, epoch=request.epoch, first_position=request.first_position)
        return batch


def _batch_as_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


def _worker_init(_worker_id: int) -> None:
    # Workers decode and augment one sample at a time; intra-op threads would only oversubscribe.
    torch.set_num_threads(1)


def build_pretrain_loader(
    dataset: PretrainBatches,
    batch_per_rank: int,
    rank: int,
    world_size: int,
    start: DataCursor,
    workers: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 2,
) -> tuple[DataLoader, PretrainSampler]:
    """An infinite, in-order loader of this rank's batches from `start` on, and its sampler."""
    sampler = PretrainSampler(len(dataset.reader.table), batch_per_rank, rank, world_size, dataset.seed, start)
    loader = DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,  # the dataset returns whole batches
        num_workers=workers,
        collate_fn=_batch_as_is,
        worker_init_fn=_worker_init if workers else None,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if workers else None,
    )
    return loader, sampler
