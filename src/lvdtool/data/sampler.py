"""Exact, resumable sample order for pretraining: which images every rank sees at every iteration.

The order is a pure function of (seed, epoch): each epoch is a permutation of the dataset rows,
and global batch j of an epoch is the slice [offset, offset + global_batch) of that permutation
(the tail that does not fill a global batch is dropped). Rank r takes the contiguous part
[offset + r * batch_per_rank, offset + (r + 1) * batch_per_rank).

The position of a run is a `DataCursor` (iteration, epoch, offset in the epoch). It is global:
it does not depend on the world size, so a run resumed at another world size continues with the
next unseen images of the same epoch permutation (see docs/pretrain.md). Random choices made per
sample (augmentation) or per rank batch (iBOT masks) are seeded from the sample's *global
position*, so they do not depend on the number of DataLoader workers either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from lvdtool.errors import ConfigError

# Stream tags keep the seeds of different kinds of draws apart.
STREAM_PERMUTATION = 0
STREAM_AUGMENT = 1
STREAM_MASKS = 2
STREAM_MODEL = 3
STREAM_RESOLUTION = 4


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of non-negative integers (well mixed, collision-resistant)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@dataclass(frozen=True)
class DataCursor:
    """Where the data stream stands before `iteration`: `offset` images of `epoch` consumed."""

    iteration: int = 0
    epoch: int = 0
    offset: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> DataCursor:
        return cls(int(d["iteration"]), int(d["epoch"]), int(d["offset"]))


@dataclass(frozen=True)
class BatchRequest:
    """What one rank loads for one iteration: dataset rows at global positions of an epoch."""

    iteration: int
    epoch: int
    first_position: int  # global position (in the epoch permutation) of rows[0]
    rows: np.ndarray  # int64 dataset row indices, in batch order


class EpochOrder:
    """Maps iterations to (epoch, offset) from a starting cursor at a fixed global batch."""

    def __init__(self, n_samples: int, global_batch: int, start: DataCursor | None = None) -> None:
        if global_batch < 1:
            raise ConfigError(f"global batch must be >= 1, got {global_batch}")
        if n_samples < global_batch:
            raise ConfigError(
                f"the dataset has {n_samples} images, fewer than one global batch of {global_batch} "
                "(lower train.batch_size_per_gpu or use fewer ranks)"
            )
        self.n_samples = int(n_samples)
        self.global_batch = int(global_batch)
        self.start = start or DataCursor()

    @property
    def batches_per_epoch(self) -> int:
        return self.n_samples // self.global_batch

    def cursor_at(self, iteration: int) -> DataCursor:
        """The cursor before `iteration` (>= the start iteration)."""
        steps = iteration - self.start.iteration
        if steps < 0:
            raise ConfigError(f"iteration {iteration} is before the data start {self.start.iteration}")
        # Batches that still fit in the starting epoch (it may have been begun at another batch size).
        left_in_start = max(self.n_samples - self.start.offset, 0) // self.global_batch
        if steps < left_in_start:
            return DataCursor(iteration, self.start.epoch, self.start.offset + steps * self.global_batch)
        steps -= left_in_start
        per_epoch = self.batches_per_epoch
        return DataCursor(iteration, self.start.epoch + 1 + steps // per_epoch, (steps % per_epoch) * self.global_batch)


class EpochPermutations:
    """The per-epoch permutation of dataset rows, from (seed, epoch); caches the current epoch."""

    def __init__(self, n_samples: int, seed: int) -> None:
        self.n_samples = n_samples
        self.seed = seed
        self._epoch: int | None = None
        self._perm: np.ndarray | None = None

    def __call__(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng(derive_seed(self.seed, STREAM_PERMUTATION, epoch))
            perm = rng.permutation(self.n_samples)
            # int32 halves the memory of a 100M+ row permutation.
            self._perm = perm.astype(np.int32) if self.n_samples < 2**31 else perm
            self._epoch = epoch
        assert self._perm is not None
        return self._perm


class PretrainSampler:
    """Infinite iterable of this rank's `BatchRequest`s from `start` on (a DataLoader sampler)."""

    def __init__(
        self,
        n_samples: int,
        batch_per_rank: int,
        rank: int,
        world_size: int,
        seed: int,
        start: DataCursor | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} outside world size {world_size}")
        self.order = EpochOrder(n_samples, batch_per_rank * world_size, start)
        self.batch_per_rank = int(batch_per_rank)
        self.rank = rank
        self.permutations = EpochPermutations(n_samples, seed)

    def request(self, iteration: int) -> BatchRequest:
        cursor = self.order.cursor_at(iteration)
        first = cursor.offset + self.rank * self.batch_per_rank
        perm = self.permutations(cursor.epoch)
        rows = perm[first : first + self.batch_per_rank].astype(np.int64)
        return BatchRequest(iteration, cursor.epoch, first, rows)

    def __iter__(self) -> Iterator[BatchRequest]:
        iteration = self.order.start.iteration
        while True:
            yield self.request(iteration)
            iteration += 1
