"""Spherical Lloyd iterations with torch: streamed data, centroids in memory.

One pass per iteration: each chunk is assigned (matrix product + argmax), its rows are
added to per-cluster sums with `index_add_` and counted with `bincount` (no per-cluster
loop); sums, counts and the objective are all-reduced over ranks; centroids are the
normalised sums. Empty clusters are re-seeded, in index order, with the rows farthest from
their centroid (lowest cosine, ties by global row), collected during the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lvdtool.index.cluster_context import ClusterContext
from lvdtool.index.vectors import VectorSource

MAX_FAR_CANDIDATES = 1024
# "exact": fixed-point int64 sums (2^-32 steps, exact for clusters up to 2^31 rows). Integer addition
# is associative, so the centroids are bit-identical whatever the chunking and however the rows are
# split over ranks: W ranks give the bytes of one process.
ACCUMULATE_DTYPES = {"float32": torch.float32, "float64": torch.float64, "exact": torch.int64}
FIXED_POINT_SCALE = float(1 << 32)


@dataclass
class _FarRows:
    """The rows with the lowest similarity to their centroid seen so far in a pass."""

    limit: int
    sims: torch.Tensor
    rows: torch.Tensor
    vectors: torch.Tensor

    @classmethod
    def empty(cls, limit: int, dim: int, device: torch.device) -> "_FarRows":
        return cls(limit, torch.empty(0, device=device), torch.empty(0, dtype=torch.int64, device=device),
                   torch.empty((0, dim), device=device))

    def add(self, sims: torch.Tensor, rows: torch.Tensor, vectors: torch.Tensor) -> None:
        take = min(self.limit, sims.shape[0])
        _, low = torch.topk(sims, take, largest=False)
        self.sims = torch.cat([self.sims, sims[low]])
        self.rows = torch.cat([self.rows, rows[low]])
        self.vectors = torch.cat([self.vectors, vectors[low]])
        if self.sims.shape[0] > self.limit:
            _, keep = torch.topk(self.sims, self.limit, largest=False)
            self.sims, self.rows, self.vectors = self.sims[keep], self.rows[keep], self.vectors[keep]

    def farthest_first(self, ctx: ClusterContext) -> torch.Tensor:
        """All ranks' candidates, farthest first (ties by global row): identical on every rank."""
        sims = ctx.gather(self.sims.cpu()).numpy()
        rows = ctx.gather(self.rows.cpu()).numpy()
        vectors = ctx.gather(self.vectors.cpu())
        order = np.lexsort((rows, sims))
        return vectors[torch.from_numpy(order)]


@dataclass
class LloydState:
    centroids: torch.Tensor  # [k, dim] float32, unit rows, on the device
    history: list[float]
    reseeded: int = 0


def lloyd_iteration(
    source: VectorSource, state: LloydState, ctx: ClusterContext, accumulate: str, reseed_empty: bool = True
) -> None:
    """One assignment pass + centroid update, in place on `state`."""
    k, dim = state.centroids.shape
    acc = ACCUMULATE_DTYPES[accumulate]
    sums = torch.zeros((k, dim), dtype=acc, device=ctx.device)
    counts = torch.zeros(k, dtype=torch.int64, device=ctx.device)
    objective = torch.zeros(1, dtype=torch.float64, device=ctx.device)
    far = _FarRows.empty(min(k, MAX_FAR_CANDIDATES), dim, ctx.device)
    for start, x in ctx.device_chunks(source):
        best, nearest = ctx.best_match(x, state.centroids)
        if acc == torch.int64:
            sums.index_add_(0, nearest, torch.round(x.double() * FIXED_POINT_SCALE).long())
        else:
            sums.index_add_(0, nearest, x.to(acc))
        counts += torch.bincount(nearest, minlength=k)
        objective += best.to(torch.float64).sum()
        rows = torch.arange(x.shape[0], device=ctx.device) + (start + ctx.part.row_offset)
        far.add(best, rows, x)
    sums, counts, objective = ctx.sum(sums), ctx.sum(counts), ctx.sum(objective)
    state.history.append(float(objective) / max(1, ctx.part.global_rows))

    if acc == torch.int64:
        sums = sums.double()
    norms = sums.norm(dim=1, keepdim=True)
    updated = (sums / norms.clamp_min(1e-30)).to(torch.float32)
    empty = torch.nonzero((counts == 0) | (norms.squeeze(1) == 0)).squeeze(1)
    # Keep an empty cluster's old centroid unless a far row is available to replace it.
    updated[empty] = state.centroids[empty]
    if empty.numel() and reseed_empty:
        replacements = far.farthest_first(ctx).to(ctx.device)
        n = min(empty.numel(), replacements.shape[0])
        updated[empty[:n]] = replacements[:n]
        state.reseeded += n
    state.centroids = updated


def assign_chunks(
    source: VectorSource, centroids: torch.Tensor, ctx: ClusterContext
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (int64) and its cosine (float32) for every local row."""
    assignment = np.empty(source.num_vectors, dtype=np.int64)
    similarity = np.empty(source.num_vectors, dtype=np.float32)
    for start, x in ctx.device_chunks(source):
        best, nearest = ctx.best_match(x, centroids)
        if ctx.backend.precision != "fp32":  # report exact cosines, not bf16-rounded ones
            best = (x * centroids[nearest]).sum(dim=1)
        assignment[start : start + x.shape[0]] = nearest.cpu().numpy()
        similarity[start : start + x.shape[0]] = best.cpu().numpy()
    return assignment, similarity
