"""Nearest-neighbour search and clustering over (possibly out-of-core) unit vectors.

Inputs are numpy arrays or any `VectorSource` (num_vectors, dim, iter_chunks). Engines:
torch (CPU/CUDA, torch.distributed) and faiss (CPU; GPU for IVF indices), see `backend.py`.
"""

from lvdtool.index.backend import Backend, select_backend
from lvdtool.index.balanced import balanced_sample, cluster_quotas
from lvdtool.index.components import connected_components, edges_from_knn, edges_from_range
from lvdtool.index.estimate import CostEstimate, estimate_costs
from lvdtool.index.faiss_index import build_faiss_index, search_faiss_index, set_nprobe
from lvdtool.index.hkmeans import Hierarchy, LevelSpec, hierarchical_kmeans
from lvdtool.index.kmeans import KMeansConfig, KMeansResult, assign, spherical_kmeans
from lvdtool.index.knn import knn_search, range_search, self_knn, self_range_pairs
from lvdtool.index.range_result import RangeResult
from lvdtool.index.selection import take_per_cluster, waterfill, waterfill_groups
from lvdtool.index.topk import merge_topk
from lvdtool.index.vectors import ArrayVectors, VectorSource, as_source, gather_rows

__all__ = [
    "ArrayVectors",
    "Backend",
    "CostEstimate",
    "Hierarchy",
    "KMeansConfig",
    "KMeansResult",
    "LevelSpec",
    "RangeResult",
    "VectorSource",
    "as_source",
    "assign",
    "balanced_sample",
    "build_faiss_index",
    "cluster_quotas",
    "connected_components",
    "edges_from_knn",
    "edges_from_range",
    "estimate_costs",
    "gather_rows",
    "hierarchical_kmeans",
    "knn_search",
    "merge_topk",
    "range_search",
    "search_faiss_index",
    "select_backend",
    "self_knn",
    "self_range_pairs",
    "set_nprobe",
    "spherical_kmeans",
    "take_per_cluster",
    "waterfill",
    "waterfill_groups",
]
