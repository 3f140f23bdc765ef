"""Centroid initialisation for spherical k-means, deterministic for a seed.

- "random": k distinct rows drawn uniformly (by global row id).
- "kmeans||" (Bahmani et al. 2012): a few rounds, each one data pass that keeps every row
  with probability min(1, l * cost / total cost), cost = 1 - cosine to the nearest candidate
  (half the squared L2 distance on unit vectors). Keep decisions use a hash of (seed, round,
  global row), so the candidates do not depend on chunking or on how rows are split over
  ranks. Candidates are weighted by the rows nearest to them and reduced to k by weighted
  k-means++ on the candidates alone (local, no communication).
Cost in data passes: `rounds` cost passes (+ as many gathers for sources not in RAM) and one
weighting pass against ~rounds x l candidates; the row costs are kept in RAM (4 bytes/row).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from lvdtool.errors import ConfigError
from lvdtool.index.cluster_context import ClusterContext
from lvdtool.index.vectors import VectorSource, gather_rows

InitFn = Callable[[VectorSource, int, int, ClusterContext, "InitOptions"], torch.Tensor]
INITS: dict[str, InitFn] = {}


class InitOptions:
    def __init__(self, rounds: int = 3, oversampling: float = 1.0) -> None:
        self.rounds = rounds
        self.oversampling = oversampling


def register_init(name: str) -> Callable[[InitFn], InitFn]:
    def wrap(fn: InitFn) -> InitFn:
        INITS[name] = fn
        return fn

    return wrap


def initial_centroids(
    source: VectorSource, k: int, seed: int, ctx: ClusterContext, method: str, options: InitOptions
) -> torch.Tensor:
    if method not in INITS:
        raise ConfigError(f"init: expected one of {', '.join(sorted(INITS))}, got {method!r}")
    return INITS[method](source, k, seed, ctx, options)


@register_init("random")
def random_init(source: VectorSource, k: int, seed: int, ctx: ClusterContext, options: InitOptions) -> torch.Tensor:
    rows = np.random.default_rng(seed).choice(ctx.part.global_rows, size=k, replace=False)
    return ctx.global_rows(source, rows)


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + _MIX[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX[1]
    z = (z ^ (z >> np.uint64(27))) * _MIX[2]
    return z ^ (z >> np.uint64(31))


def hash_uniform(seed: int, stream: int, rows: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers that depend only on (seed, stream, row): a counter-based RNG."""
    key = _splitmix64(np.array([(seed & 0xFFFFFFFF) << 20 ^ stream], dtype=np.uint64))
    with np.errstate(over="ignore"):
        bits = _splitmix64(np.asarray(rows, dtype=np.uint64) ^ key)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def weighted_kmeanspp(points: torch.Tensor, weights: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k of `points` (unit rows) by greedy weighted k-means++; returns their indices.

    Greedy: each step draws 2 + ln(k) candidates by weight x cost and keeps the one that
    lowers the total weighted cost most (plain k-means++ often puts two centroids in one
    well-separated cluster and misses another).
    """
    rng = np.random.default_rng(seed)
    trials = 2 + int(np.log(max(k, 1)))
    weights = weights.to(torch.float64)
    n = points.shape[0]
    chosen = torch.zeros(n, dtype=torch.bool, device=points.device)
    picks = []
    cost = torch.ones(n, dtype=torch.float64, device=points.device)  # everything is far at first
    for _ in range(k):
        mass = weights * cost
        mass[chosen] = 0
        total = float(mass.sum())
        if total <= 0:  # remaining points duplicate chosen ones: take the next unchosen
            idx = int(torch.nonzero(~chosen)[0])
            new_cost = torch.minimum(cost, (1.0 - (points @ points[idx]).double()).clamp_min(0.0))
        else:
            targets = torch.from_numpy(rng.random(trials) * total).to(points.device)
            tries = torch.searchsorted(torch.cumsum(mass, 0), targets, right=True).clamp_max(n - 1)
            tries = torch.where(mass[tries] > 0, tries, torch.nonzero(mass > 0)[-1])  # cdf-top rounding
            costs = torch.minimum(cost[:, None], (1.0 - (points @ points[tries].T).double()).clamp_min(0.0))
            best = int(torch.argmin((weights[:, None] * costs).sum(dim=0)))
            idx, new_cost = int(tries[best]), costs[:, best]
        picks.append(idx)
        chosen[idx] = True
        cost = new_cost
    return torch.tensor(picks, dtype=torch.int64)


@register_init("kmeans||")
def parallel_init(source: VectorSource, k: int, seed: int, ctx: ClusterContext, options: InitOptions) -> torch.Tensor:
    part = ctx.part
    per_round = options.oversampling * k
    first = np.random.default_rng(seed).integers(part.global_rows, size=1)
    candidates = ctx.global_rows(source, first)
    newest = candidates
    cost = np.full(part.local_rows, np.inf, dtype=np.float32)
    for round_index in range(options.rounds):
        for start, x in ctx.device_chunks(source):
            best, _ = ctx.best_match(x, newest)
            rows = slice(start, start + x.shape[0])
            cost[rows] = np.minimum(cost[rows], (1.0 - best).clamp_min(0.0).cpu().numpy())
        total = float(ctx.sum(torch.tensor([cost.sum(dtype=np.float64)], dtype=torch.float64)))
        if total <= 0.0:
            break
        global_ids = np.arange(part.local_rows, dtype=np.int64) + part.row_offset
        keep = hash_uniform(seed, round_index + 1, global_ids) < per_round * cost / total
        picked = np.flatnonzero(keep)
        ids = ctx.gather(torch.from_numpy(picked + part.row_offset))
        vectors = ctx.gather(torch.from_numpy(gather_rows(source, picked, ctx.chunk_rows)))
        order = torch.argsort(ids)  # rank order already is global order; sort for clarity
        newest = vectors[order].to(ctx.device)
        if newest.shape[0] == 0:
            break
        candidates = torch.cat([candidates, newest])
    if candidates.shape[0] <= k:
        # Too few distinct candidates (tiny or highly duplicated data): fall back to random rows.
        return random_init(source, k, seed, ctx, options)
    counts = torch.zeros(candidates.shape[0], dtype=torch.float64, device=ctx.device)
    for _, x in ctx.device_chunks(source):
        _, nearest = ctx.best_match(x, candidates)
        counts += torch.bincount(nearest, minlength=candidates.shape[0]).to(torch.float64)
    counts = ctx.sum(counts)
    picks = weighted_kmeanspp(candidates, counts, k, seed)
    return candidates[picks.to(candidates.device)]
