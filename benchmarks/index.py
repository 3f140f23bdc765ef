"""Throughput of the index package: k-means, exact k-NN and the dedup graph, faiss vs torch.

    python benchmarks/index.py                      # 100k x 384 (CPU-sized default)
    python benchmarks/index.py --sizes 1000000 --dims 384 1024 --precisions fp32 bf16

Data: synthetic float16 unit vectors around 1,000 centres, 5% near-duplicates (so the dedup
graph has edges). The torch engine runs on CUDA when available, else on CPU. Both engines
start k-means from the same centroids and run the same number of Lloyd iterations.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import faiss
import numpy as np
import torch

from lvdtool.index import (
    KMeansConfig,
    connected_components,
    edges_from_range,
    knn_search,
    range_search,
    spherical_kmeans,
)


def make_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    copies = rng.choice(n, n // 20, replace=False)
    x[copies] = x[rng.integers(0, n, len(copies))] + 0.01 * rng.standard_normal((len(copies), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def engines(precisions: list[str]) -> list[tuple[str, str, str]]:
    """(label, engine, precision)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = [("faiss-cpu", "faiss", "fp32")]
    rows += [(f"torch-{device}-{p}", "torch", p) for p in precisions]
    return rows


def bench_size(n: int, dim: int, args: argparse.Namespace) -> list[tuple]:
    x = make_vectors(n, dim)
    queries = x[: args.queries]
    init = x[np.random.default_rng(1).choice(n, args.clusters, replace=False)].astype(np.float32)
    rows = []
    for label, engine, precision in engines(args.precisions):
        config = KMeansConfig(n_iter=args.iters, engine=engine, precision=precision, stop_when_converged=False,
                              chunk_rows=args.chunk_rows)
        seconds, result = timed(lambda: spherical_kmeans(x, args.clusters, config, init_centroids=init))
        passes = len(result.objective_history) + 1  # Lloyd passes + final assignment
        flops = 2.0 * n * args.clusters * dim * passes
        rows.append(("k-means", n, dim, label, seconds, f"{n * passes / seconds:,.0f} rows*iter/s", flops / seconds))

        seconds, _ = timed(lambda: knn_search(queries, x, args.k, engine=engine, precision=precision,
                                              chunk_rows=args.chunk_rows))
        flops = 2.0 * len(queries) * n * dim
        rows.append((f"exact {args.k}-NN", n, dim, label, seconds, f"{len(queries) / seconds:,.0f} queries/s",
                     flops / seconds))

        def dedup_graph():
            found = range_search(queries, x, args.threshold, engine=engine, precision=precision,
                                 chunk_rows=args.chunk_rows)
            return len(found.ids), connected_components(n, *edges_from_range(found))

        seconds, (pairs, _) = timed(dedup_graph)
        rows.append((f"dedup graph (range > {args.threshold} + components)", n, dim, label, seconds,
                     f"{len(queries) / seconds:,.0f} queries/s ({pairs:,} pairs)", flops / seconds))
    # A sparse random graph (average degree 2): a giant component plus many small ones.
    rng = np.random.default_rng(2)
    nodes = edges = args.graph_factor * n
    src, dst = rng.integers(0, nodes, edges), rng.integers(0, nodes, edges)
    for method in ("scipy", "numpy"):
        seconds, labels = timed(lambda: connected_components(nodes, src, dst, method=method))
        rows.append((f"components ({nodes:,} nodes, {edges:,} edges)", n, dim, method, seconds,
                     f"{edges / seconds:,.0f} edges/s ({labels.max() + 1:,} comps)", float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="database rows N")
    parser.add_argument("--dims", type=int, nargs="+", default=[384], help="vector dimensions D")
    parser.add_argument("--clusters", type=int, default=1000, help="k-means clusters")
    parser.add_argument("--iters", type=int, default=10, help="Lloyd iterations")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--queries", type=int, default=10_000, help="queries for k-NN and range search")
    parser.add_argument("--threshold", type=float, default=0.9, help="range-search similarity threshold")
    parser.add_argument("--chunk-rows", type=int, default=32768, help="rows per streamed chunk")
    parser.add_argument("--graph-factor", type=int, default=10, help="components graph: factor x N nodes and edges")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="torch matmul precisions to measure")
    args = parser.parse_args()

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"# index benchmark {datetime.date.today()} | torch {torch.__version__} | faiss {faiss.__version__} | "
          f"{device} | {platform.processor() or platform.machine()}")
    print(f"# k-means: {args.clusters} clusters x {args.iters} iterations; k-NN/range: {args.queries:,} queries "
          f"against N; components: random graph")
    print("| op | N | D | engine | seconds | throughput | GFLOP/s |")
    print("|---|---:|---:|---|---:|---|---:|")
    for n in args.sizes:
        for dim in args.dims:
            for op, rows, d, label, seconds, rate, flops in bench_size(n, dim, args):
                gflops = "" if np.isnan(flops) else f"{flops / 1e9:,.0f}"
                print(f"| {op} | {rows:,} | {d} | {label} | {seconds:.2f} | {rate} | {gflops} |", flush=True)


if __name__ == "__main__":
    main()
