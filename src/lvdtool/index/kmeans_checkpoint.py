"""Checkpoints of a k-means run: the centroids after init and every few Lloyd iterations.

One `.npz` (written atomically, rank 0 only: every rank holds the same centroids) with the
centroids, the iterations done, the objective history and whether Lloyd converged. A rerun
after a kill starts from the last checkpoint instead of from init; since every iteration is a
deterministic function of the centroids before it (with `accumulate="exact"` even across rank
splits), the resumed run ends with the centroids of an uninterrupted one.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lvdtool.artifacts.atomic import atomic_path
from lvdtool.index.kmeans_torch import LloydState


@dataclass
class KMeansCheckpoint:
    path: Path
    every: int = 5  # Lloyd iterations between checkpoints
    write: bool = True  # False on ranks other than 0
    loaded_iterations: int = -1  # set by `load`: iterations the checkpoint held (-1: none)

    def load(self, k: int, dim: int) -> tuple[LloydState, int, bool] | None:
        """(state, iterations done, converged) or None when absent, unreadable or of another shape."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                centroids = np.array(data["centroids"], dtype=np.float32)
                iterations, converged = int(data["iterations"]), bool(data["converged"])
                history, reseeded = [float(v) for v in data["history"]], int(data["reseeded"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None
        if centroids.shape != (k, dim):
            return None
        self.loaded_iterations = iterations
        return LloydState(torch.from_numpy(centroids), history, reseeded), iterations, converged

    def save(self, state: LloydState, iterations: int, converged: bool) -> None:
        if not self.write:
            return
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, centroids=state.centroids.cpu().numpy().astype(np.float32), iterations=np.array(iterations),
                         converged=np.array(converged), history=np.array(state.history, np.float64),
                         reseeded=np.array(state.reseeded))
