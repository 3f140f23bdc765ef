"""Top-k bookkeeping shared by chunked, sharded and distributed search.

Convention (as in faiss): missing neighbours have similarity -inf and id -1. Returned rows are
ordered by similarity descending, then id ascending, so equal similarities come out in a
fixed order whatever the chunking.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

MISSING_ID = -1


def empty_topk(rows: int, k: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    sims = torch.full((rows, k), float("-inf"), dtype=torch.float32, device=device)
    ids = torch.full((rows, k), MISSING_ID, dtype=torch.int64, device=device)
    return sims, ids


def merge_topk_torch(
    sims_a: torch.Tensor, ids_a: torch.Tensor, sims_b: torch.Tensor, ids_b: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best k of two candidate lists per row (widths may differ)."""
    sims = torch.cat([sims_a, sims_b.to(sims_a.device, torch.float32)], dim=1)
    ids = torch.cat([ids_a, ids_b.to(ids_a.device, torch.int64)], dim=1)
    best, pos = torch.topk(sims, min(k, sims.shape[1]), dim=1)
    return best, torch.gather(ids, 1, pos)


def sort_neighbours(sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by similarity descending, then id ascending (missing entries last)."""
    order = np.lexsort((ids, -sims.astype(np.float64)), axis=-1)
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(ids, order, axis=1)


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard results (sims [Nq, k_s], global ids [Nq, k_s]) into the best k per query.

    This is how a search over many database shards (or machines) is combined: each shard is
    searched independently with ids already offset to global row ids, then merged here.
    """
    if not parts:
        raise ValueError("merge_topk needs at least one part")
    rows = parts[0][0].shape[0]
    sims, ids = empty_topk(rows, k)
    for part_sims, part_ids in parts:
        sims, ids = merge_topk_torch(sims, ids, torch.from_numpy(np.asarray(part_sims, np.float32)),
                                     torch.from_numpy(np.asarray(part_ids, np.int64)), k)
    return sort_neighbours(sims.numpy(), ids.numpy())
