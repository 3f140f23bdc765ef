"""Loop-free per-cluster selection: water-filling quotas and taking the first n rows per cluster.

Both work on whole arrays with sorts and segment sums, so 10^6 clusters cost a few sorts,
not a Python loop per cluster.
"""

from __future__ import annotations

import numpy as np

from lvdtool.errors import InputError


def _positions_in_groups(sorted_groups: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(position within its group, group start) for each entry of a group-sorted array."""
    starts = np.searchsorted(sorted_groups, np.arange(num_groups))
    return np.arange(len(sorted_groups)) - starts[sorted_groups], starts


def waterfill_groups(
    sizes: np.ndarray, groups: np.ndarray, quotas: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Split each group's quota among its members as evenly as their sizes allow.

    For group g find the largest integer cap t with sum(min(t, size)) <= quotas[g]; each member
    gets min(t, size), and the r left over go one each to r random members larger than t.
    Returns int64 allocations, alloc <= size, summing to the quota of each group.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    quotas = np.asarray(quotas, dtype=np.int64)
    num_groups = len(quotas)
    totals = np.bincount(groups, weights=sizes, minlength=num_groups).astype(np.int64)
    if np.any(quotas > totals) or np.any(quotas < 0):
        bad = int(np.flatnonzero((quotas > totals) | (quotas < 0))[0])
        raise InputError(f"target: quota {quotas[bad]} for cluster {bad} exceeds its {totals[bad]} items")

    order = np.lexsort((sizes, groups))  # by group, then size ascending
    s, g = sizes[order], groups[order]
    pos, starts = _positions_in_groups(g, num_groups)
    members = np.bincount(g, minlength=num_groups)
    after = members[g] - pos - 1
    cumulative = np.cumsum(s)
    before_group = np.where(starts > 0, cumulative[np.maximum(starts - 1, 0)], 0)
    prefix = cumulative - before_group[g]
    # Cost of filling this member and all smaller ones fully, the larger ones up to this size;
    # it never decreases along a group, so the members that fit fully are a prefix.
    fill_cost = prefix + s * after
    full = np.bincount(g, weights=(fill_cost <= quotas[g]), minlength=num_groups).astype(np.int64)

    last_full = starts + full - 1  # sorted position of the largest fully-filled member
    has_full = full > 0
    level = np.where(has_full, s[np.maximum(last_full, 0)], 0)
    spent = np.where(has_full, fill_cost[np.maximum(last_full, 0)], 0)
    open_members = members - full
    share = np.where(open_members > 0, (quotas - spent) // np.maximum(open_members, 1), 0)
    cap = level + share
    leftover = quotas - spent - share * open_members

    eligible = pos >= full[g]
    # Random order among the members above the cap; the first `leftover` of each group get +1.
    key = rng.random(len(s))
    order2 = np.lexsort((key, ~eligible, g))
    rank2, _ = _positions_in_groups(g[order2], num_groups)
    extra_sorted = np.zeros(len(s), dtype=np.int64)
    extra_sorted[order2] = (eligible[order2] & (rank2 < leftover[g[order2]])).astype(np.int64)

    alloc_sorted = np.where(eligible, cap[g] + extra_sorted, s)
    alloc = np.empty_like(alloc_sorted)
    alloc[order] = alloc_sorted
    return alloc


def waterfill(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """`waterfill_groups` with all clusters in one group."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return waterfill_groups(sizes, np.zeros(len(sizes), np.int64), np.array([target], np.int64), rng)


def take_per_cluster(assignment: np.ndarray, key: np.ndarray, counts: np.ndarray | int) -> np.ndarray:
    """Rows with the `counts[c]` smallest keys in each cluster c (ties by row), sorted ascending."""
    assignment = np.asarray(assignment, dtype=np.int64)
    n = len(assignment)
    order = np.lexsort((np.arange(n), key, assignment))
    sorted_clusters = assignment[order]
    num_clusters = int(assignment.max()) + 1 if n else 0
    rank, _ = _positions_in_groups(sorted_clusters, num_clusters)
    limit = counts if np.isscalar(counts) else np.asarray(counts, dtype=np.int64)[sorted_clusters]
    return np.sort(order[rank < limit])
