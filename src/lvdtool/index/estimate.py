"""Dry-run cost estimate: bytes and FLOPs of embedding storage, exact k-NN, k-means and an
IVF index, before anything runs (`lvd curate --dry-run`).

FLOP counts are for the matrix products (2 x rows x cols x dim) that dominate; divide by a
measured rate (benchmarks/index.py prints them) for a time. Rates measured here: faiss k-means
on 2 CPU cores ~3e11 FLOP/s; exact k-NN ~1.3e11 FLOP/s (DESIGN.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lvdtool.errors import ConfigError, InputError
from lvdtool.index.cluster_context import SCORE_BLOCK_ELEMENTS

ID_BYTES = 8  # faiss stores an int64 id per vector in inverted lists


@dataclass(frozen=True)
class CostEstimate:
    num_vectors: int
    dim: int
    vector_bytes: int  # embeddings at bytes_per_element (disk, or RAM if loaded whole)
    float32_chunk_bytes: int  # one streamed chunk as float32
    index_factory: str
    index_bytes_per_vector: int
    index_bytes: int  # codes + ids + coarse centroids and codebooks
    knn_flops: float  # exact k-NN of num_queries against all vectors
    knn_result_bytes: int  # sims + ids of the k-NN result
    kmeans_flops: float  # init (kmeans||) + n_iter Lloyd passes + final assignment
    kmeans_state_bytes: int  # centroids + sums (float32) + similarity block
    assignment_bytes: int  # per-row cluster id (int64) + similarity (float32)

    def seconds(self, flops_per_second: float) -> dict[str, float]:
        return {"knn": self.knn_flops / flops_per_second, "kmeans": self.kmeans_flops / flops_per_second}

    def as_dict(self) -> dict:
        return asdict(self)

    def as_table(self) -> str:
        """Plain-text table for the terminal (sizes in GiB, work in TFLOP)."""
        gib = 1 << 30
        lines = [
            f"vectors        {self.num_vectors:,} x {self.dim}",
            f"embeddings     {self.vector_bytes / gib:10.2f} GiB",
            f"chunk (fp32)   {self.float32_chunk_bytes / gib:10.3f} GiB",
            f"index {self.index_factory:<9}{self.index_bytes / gib:10.2f} GiB ({self.index_bytes_per_vector} B/vector)",
            f"exact k-NN     {self.knn_flops / 1e12:10.3g} TFLOP, result {self.knn_result_bytes / gib:.2f} GiB",
            f"k-means        {self.kmeans_flops / 1e12:10.3g} TFLOP, state {self.kmeans_state_bytes / gib:.2f} GiB",
            f"assignment     {self.assignment_bytes / gib:10.2f} GiB",
        ]
        return "\n".join(lines)


def index_bytes(dim: int, num_vectors: int, factory: str) -> tuple[int, int]:
    """(bytes per vector, total bytes) of a faiss index_factory string, read from faiss itself."""
    import faiss

    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ConfigError(f"index: faiss cannot build {factory!r}: {str(err).splitlines()[0]}") from err
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        ivf = None
    if ivf is None:
        per_vector = int(index.sa_code_size())
        return per_vector, per_vector * num_vectors
    per_vector = int(ivf.code_size) + ID_BYTES
    fixed = ivf.nlist * dim * 4  # coarse centroids
    pq = getattr(faiss.downcast_index(ivf), "pq", None)
    if pq is not None:
        fixed += pq.M * pq.ksub * pq.dsub * 4  # product-quantiser codebooks
    return per_vector, per_vector * num_vectors + fixed


def estimate_costs(
    num_vectors: int,
    dim: int,
    *,
    k: int = 64,
    n_clusters: int = 100_000,
    n_iter: int = 20,
    bytes_per_element: int = 2,
    index: str = "IVF65536,PQ64",
    num_queries: int | None = None,
    chunk_rows: int = 32768,
    init_rounds: int = 3,
    init_oversampling: float = 1.0,
) -> CostEstimate:
    """Estimate storage and compute for N x D vectors (num_queries defaults to N: self k-NN)."""
    if num_vectors < 1 or dim < 1:
        raise InputError(f"num_vectors/dim: must be positive, got {num_vectors} x {dim}")
    queries = num_vectors if num_queries is None else num_queries
    per_vector, total_index = index_bytes(dim, num_vectors, index)
    candidates = init_rounds * init_oversampling * n_clusters  # kmeans|| candidates
    matmul = 2.0 * num_vectors * dim
    score_block = min(min(chunk_rows, num_vectors) * n_clusters, SCORE_BLOCK_ELEMENTS)
    return CostEstimate(
        num_vectors=num_vectors,
        dim=dim,
        vector_bytes=num_vectors * dim * bytes_per_element,
        float32_chunk_bytes=min(chunk_rows, num_vectors) * dim * 4,
        index_factory=index,
        index_bytes_per_vector=per_vector,
        index_bytes=total_index,
        knn_flops=matmul * queries,
        knn_result_bytes=queries * k * 12,
        kmeans_flops=matmul * (n_clusters * (n_iter + 1) + 2 * candidates),
        kmeans_state_bytes=2 * n_clusters * dim * 4 + score_block * 4,
        assignment_bytes=num_vectors * 12,
    )
