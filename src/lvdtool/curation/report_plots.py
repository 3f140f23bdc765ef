"""Cluster-size histograms before and after curation (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lvdtool.artifacts.atomic import atomic_path


def cluster_size_histograms(before: np.ndarray, after: np.ndarray, path: str | Path, title: str) -> None:
    """Left: histogram of images per pool cluster, pool vs selection (log bins); right: sizes by rank.

    A curated selection flattens the distribution: dominant clusters shrink, rare ones stay.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, rank) = plt.subplots(1, 2, figsize=(10, 4))
    top = max(int(before.max()) if before.size else 1, 1)
    bins = np.unique(np.geomspace(1, top + 1, num=30).astype(int))
    hist.hist(before[before > 0], bins=bins, alpha=0.6, label=f"pool ({int(before.sum()):,} images)")
    hist.hist(after[after > 0], bins=bins, alpha=0.6, label=f"selection ({int(after.sum()):,} images)")
    hist.set_xscale("log")
    hist.set_xlabel("images per cluster")
    hist.set_ylabel("clusters")
    hist.legend()
    rank.plot(np.sort(before)[::-1], label="pool")
    rank.plot(np.sort(after)[::-1], label="selection")
    rank.set_yscale("symlog")
    rank.set_xlabel("cluster rank")
    rank.set_ylabel("images")
    rank.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
