"""`lvd curate --dry-run`: what the configured curation would cost, before anything runs."""
from __future__ import annotations

from lvdtool.curation.seed_sets import SeedSet
from lvdtool.index import CostEstimate, estimate_costs


def curate_estimate(
    num_vectors: int, dim: int, sets: list[SeedSet], pool_clusters: int, n_iter: int, index: str
) -> CostEstimate:
    """Pool k-means with `pool_clusters` and k-NN of every sample-mode seed image against the pool."""
    queries = sum(s.size for s in sets if s.mode == "sample")
    k = max([s.k for s in sets if s.mode == "sample"], default=4)
    return estimate_costs(num_vectors, dim, k=k, n_clusters=pool_clusters, n_iter=n_iter, index=index,
                          num_queries=max(queries, 1))


def describe(estimate: CostEstimate, sets: list[SeedSet], flops_per_second: float) -> str:
    lines = [estimate.as_table(), "", "seed sets:"]
    for s in sets:
        how = f"k = {s.k} nearest pool images each" if s.mode == "sample" else f"{s.per_cluster} images per linked cluster"
        cap = f", cap {s.cap:,}" if s.cap is not None else ""
        lines.append(f"  {s.name:<14} {s.size:>13,} images  {s.mode:<7} {how}{cap}")
    seconds = estimate.seconds(flops_per_second)
    lines += ["", f"at {flops_per_second:.3g} FLOP/s: exact k-NN {seconds['knn'] / 3600:,.1f} h, "
              f"k-means {seconds['kmeans'] / 3600:,.1f} h (an IVF-PQ index divides the k-NN work by about nlist / nprobe)"]
    return "\n".join(lines)
