"""Balanced sampling down a cluster tree (Vo et al. 2024).

Top level: water-filling finds the cap t with sum(min(t, size)) = target and gives the
remainder to random clusters above t. Each cluster's share is then split the same way among
its children, level by level; at level 0 each cluster's share is taken as random rows or
the rows closest to its centroid. Dominant modes are capped, rare ones kept whole.
"""

from __future__ import annotations

import numpy as np

from lvdtool.errors import ConfigError, InputError
from lvdtool.index.hkmeans import Hierarchy
from lvdtool.index.selection import take_per_cluster, waterfill, waterfill_groups

STRATEGIES = ("random", "closest")


def cluster_quotas(hierarchy: Hierarchy, target: int, rng: np.random.Generator) -> np.ndarray:
    """How many rows to take from each level-0 cluster (int64, sums to `target`)."""
    top = hierarchy.num_levels - 1
    quotas = waterfill(hierarchy.sizes(top), target, rng)
    for level in range(top, 0, -1):
        quotas = waterfill_groups(hierarchy.sizes(level - 1), hierarchy.assignments[level], quotas, rng)
    return quotas


def balanced_sample(hierarchy: Hierarchy, target: int, seed: int = 0, strategy: str = "random") -> np.ndarray:
    """Exactly `target` row indices (sorted, unique), balanced over the hierarchy."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not 0 <= int(target) <= hierarchy.num_rows:
        raise InputError(f"target: must be between 0 and {hierarchy.num_rows} rows, got {target}")
    rng = np.random.default_rng(seed)
    quotas = cluster_quotas(hierarchy, int(target), rng)
    if strategy == "closest":
        key = -hierarchy.similarities[0].astype(np.float64)
    else:
        key = rng.random(hierarchy.num_rows)
    return take_per_cluster(hierarchy.assignments[0], key, quotas)
