"""What every k-means pass needs: the backend, chunking, and this rank's slice of the rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from lvdtool.index.backend import Backend
from lvdtool.index.distributed import Partition, all_gather_rows, all_reduce_sum
from lvdtool.index.vectors import VectorSource, gather_rows

# Cap on one [rows x clusters] similarity block (elements), so 10^5 clusters stay in memory.
SCORE_BLOCK_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class ClusterContext:
    backend: Backend
    chunk_rows: int
    part: Partition
    active: bool  # all-reduce over torch.distributed ranks

    @property
    def device(self) -> torch.device:
        return self.backend.torch_device

    def device_chunks(self, source: VectorSource) -> Iterator[tuple[int, torch.Tensor]]:
        """(local start row, float32 chunk on the device)."""
        for start, block in source.iter_chunks(self.chunk_rows):
            yield start, torch.from_numpy(block).to(self.device)

    def best_match(self, x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Highest cosine (float32) and its centroid index for each row of x, in row blocks."""
        rows = max(64, SCORE_BLOCK_ELEMENTS // max(1, centroids.shape[0]))
        c = centroids.to(self.backend.matmul_dtype)
        sims, idx = [], []
        for s in range(0, x.shape[0], rows):
            scores = (x[s : s + rows].to(c.dtype) @ c.T).float()
            best, arg = scores.max(dim=1)
            sims.append(best)
            idx.append(arg)
        if not sims:
            return torch.empty(0, device=x.device), torch.empty(0, dtype=torch.int64, device=x.device)
        return torch.cat(sims), torch.cat(idx)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce_sum(tensor, self.active)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return all_gather_rows(tensor, self.active)

    def global_rows(self, source: VectorSource, rows: np.ndarray) -> torch.Tensor:
        """Rows by global id (every rank gets all of them, in the order asked), on the device."""
        rows = np.asarray(rows, dtype=np.int64)
        mine = np.flatnonzero((rows >= self.part.row_offset) & (rows < self.part.row_offset + self.part.local_rows))
        local = torch.from_numpy(gather_rows(source, rows[mine] - self.part.row_offset, self.chunk_rows))
        positions = self.gather(torch.from_numpy(mine))
        vectors = self.gather(local)
        out = torch.empty((len(rows), source.dim), dtype=torch.float32)
        out[positions] = vectors
        return out.to(self.device)
