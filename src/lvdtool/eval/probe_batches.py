"""The order in which training rows reach the linear classifiers."""

from __future__ import annotations

from typing import Iterator

import torch

from lvdtool.errors import ConfigError


def batch_indices(num_rows: int, batch_size: int, iterations: int, seed: int) -> Iterator[torch.Tensor]:
    """Row indices (int64, CPU) of each of `iterations` batches.

    A fresh random permutation per pass over the data, consumed `batch_size` rows at a time;
    a batch may straddle two passes, so every batch is full (as an infinite sampler).
    Depends only on the arguments, so a run is reproducible and a reference run can replay it.
    """
    if num_rows < 1 or batch_size < 1 or iterations < 0:
        raise ConfigError(
            f"batch_indices: need num_rows >= 1, batch_size >= 1, iterations >= 0; got "
            f"{num_rows}, {batch_size}, {iterations}"
        )
    generator = torch.Generator().manual_seed(seed)
    pending = torch.empty(0, dtype=torch.int64)
    for _ in range(iterations):
        while pending.numel() < batch_size:
            pending = torch.cat([pending, torch.randperm(num_rows, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]
