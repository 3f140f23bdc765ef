"""Similarity kernels: one (query block x database chunk) step of exact search, per engine.

The streaming drivers in `exact.py` own chunking, id offsets and merging; a kernel only
scores one block. Both kernels return torch tensors so the merge code is shared.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np
import torch

from lvdtool.index.backend import Backend

# bf16 inputs round each similarity by up to ~1e-2 on unit vectors; candidates within this
# margin are rescored in fp32 so returned similarities (and thresholds) are exact.
BF16_RANGE_MARGIN = 0.03


class SimilarityKernel(Protocol):
    def load_queries(self, queries: np.ndarray) -> Any: ...

    def load_database(self, block: np.ndarray) -> Any: ...

    def topk(self, queries: Any, database: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sims float32 [q, min(k, n)], local ids int64) on the kernel's device."""
        ...

    def above(self, queries: Any, database: Any, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(query row, local database row, sim) of all pairs with sim > threshold."""
        ...


KERNELS: dict[str, Callable[[Backend], SimilarityKernel]] = {}


def register_kernel(engine: str) -> Callable:
    def wrap(builder: Callable[[Backend], SimilarityKernel]) -> Callable[[Backend], SimilarityKernel]:
        KERNELS[engine] = builder
        return builder

    return wrap


def make_kernel(backend: Backend) -> SimilarityKernel:
    return KERNELS[backend.engine](backend)


@register_kernel("torch")
class TorchKernel:
    """Matrix products on the backend device; bf16 candidates are rescored in fp32."""

    def __init__(self, backend: Backend) -> None:
        self.device = backend.torch_device
        self.dtype = backend.matmul_dtype

    def load_queries(self, queries: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        exact = torch.from_numpy(queries).to(self.device)
        return exact, exact.to(self.dtype)

    load_database = load_queries

    def _scores(self, queries: tuple, database: tuple) -> torch.Tensor:
        return (queries[1] @ database[1].T).float()

    def topk(self, queries: tuple, database: tuple, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self._scores(queries, database)
        n = scores.shape[1]
        if self.dtype == torch.float32:
            sims, ids = torch.topk(scores, min(k, n), dim=1)
            return sims, ids
        # Low-precision candidates, exact fp32 similarities of the candidates.
        _, cand = torch.topk(scores, min(2 * k + 8, n), dim=1)
        exact = torch.einsum("qd,qcd->qc", queries[0], database[0][cand])
        sims, pos = torch.topk(exact, min(k, n), dim=1)
        return sims, torch.gather(cand, 1, pos)

    def above(self, queries: tuple, database: tuple, threshold: float):
        scores = self._scores(queries, database)
        margin = 0.0 if self.dtype == torch.float32 else BF16_RANGE_MARGIN
        qi, dj = torch.nonzero(scores > threshold - margin, as_tuple=True)
        if margin == 0.0:
            return qi, dj, scores[qi, dj]
        sims = (queries[0][qi] * database[0][dj]).sum(dim=1)
        keep = sims > threshold
        return qi[keep], dj[keep], sims[keep]


@register_kernel("faiss")
class FaissFlatKernel:
    """A faiss flat inner-product index per database chunk, on CPU (BLAS).

    Exact search on a GPU goes through the torch kernel; faiss-gpu is used for IVF indices.
    """

    def __init__(self, backend: Backend) -> None:
        del backend  # nothing to configure: faiss picks its own threads

    def load_queries(self, queries: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(queries, dtype=np.float32)

    def load_database(self, block: np.ndarray) -> Any:
        import faiss

        index = faiss.IndexFlatIP(block.shape[1])
        index.add(np.ascontiguousarray(block, dtype=np.float32))
        return index

    def topk(self, queries: np.ndarray, database: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        sims, ids = database.search(queries, min(k, database.ntotal))
        return torch.from_numpy(sims), torch.from_numpy(ids)

    def above(self, queries: np.ndarray, database: Any, threshold: float):
        # faiss keeps inner products strictly above the radius, like the torch kernel.
        lims, sims, ids = database.range_search(queries, float(threshold))
        qi = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims.astype(np.int64)))
        return torch.from_numpy(qi), torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(sims)
