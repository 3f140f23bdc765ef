"""Throughput of the index package: k-means, exact k-NN and the dedup graph, faiss vs torch.

    python benchmarks/index.py                      # 100k x 384 (CPU-sized default)
    python benchmarks/index.py --sizes 1000000 --dims 384 1024 --precisions fp32 bf16
    python benchmarks/index.py --sizes 1000000 --device cuda --precisions bf16 --json index.json --deadline-s 60

Data: synthetic float16 unit vectors around 1,000 centres, 5% near-duplicates (so the dedup
graph has edges). The torch engine runs on `--device` (auto: CUDA when available, else CPU);
faiss-cpu uses `--faiss-threads` (default: all cores). Both engines start k-means from the same
centroids and run the same number of Lloyd iterations. With `--deadline-s` the operations still
to run when it passes are skipped (rows with an error); `--json`/`--markdown` are rewritten after
each row.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Deadline, Table, commit  # noqa: E402

COLUMNS = ["op", "N", "D", "engine", "seconds", "throughput", "per_s", "gflop_per_s", "error"]


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


def engines(precisions: list[str], device: str) -> list[tuple[str, str, str]]:
    """(label, engine, precision)."""
    rows = [("faiss-cpu", "faiss", "fp32")]
    rows += [(f"torch-{device}-{p}", "torch", p) for p in precisions]
    return rows


def bench_size(n: int, dim: int, args: argparse.Namespace, device: str, table: Table, deadline: Deadline) -> None:
    x = make_vectors(n, dim)
    queries = x[: args.queries]
    init = x[np.random.default_rng(1).choice(n, args.clusters, replace=False)].astype(np.float32)

    def row(op: str, label: str, fn) -> None:
        """fn() -> (seconds, throughput text, per second, FLOP/s); a skipped or failed op is a row too."""
        if deadline.passed():
            table.add(op=op, N=n, D=dim, engine=label, error=f"deadline {args.deadline_s} s reached")
            return
        try:
            seconds, rate, per_s, flops = fn()
        except (RuntimeError, MemoryError) as error:  # out of memory: the next op still runs
            table.add(op=op, N=n, D=dim, engine=label, error=f"{type(error).__name__}: {str(error).splitlines()[0]}")
            return
        table.add(op=op, N=n, D=dim, engine=label, seconds=seconds, throughput=rate, per_s=per_s,
                  gflop_per_s=None if np.isnan(flops) else flops / 1e9, error="")

    for label, engine, precision in engines(args.precisions, device):
        where = {"engine": engine, "precision": precision, "device": device if engine == "torch" else "cpu"}

        def kmeans():
            config = KMeansConfig(n_iter=args.iters, stop_when_converged=False, chunk_rows=args.chunk_rows, **where)
            seconds, result = timed(lambda: spherical_kmeans(x, args.clusters, config, init_centroids=init))
            passes = len(result.objective_history) + 1  # Lloyd passes + final assignment
            rate = n * passes / seconds
            return seconds, f"{rate:,.0f} rows*iter/s", rate, 2.0 * n * args.clusters * dim * passes / seconds

        def knn():
            seconds, _ = timed(lambda: knn_search(queries, x, args.k, chunk_rows=args.chunk_rows, **where))
            rate = len(queries) / seconds
            return seconds, f"{rate:,.0f} queries/s", rate, 2.0 * len(queries) * n * dim / seconds

        def dedup_graph():
            def run():
                found = range_search(queries, x, args.threshold, chunk_rows=args.chunk_rows, **where)
                return len(found.ids), connected_components(n, *edges_from_range(found))

            seconds, (pairs, _) = timed(run)
            rate = len(queries) / seconds
            return seconds, f"{rate:,.0f} queries/s ({pairs:,} pairs)", rate, 2.0 * len(queries) * n * dim / seconds

        row("k-means", label, kmeans)
        row(f"exact {args.k}-NN", label, knn)
        row(f"dedup graph (range > {args.threshold} + components)", label, dedup_graph)
    # A sparse random graph (average degree 2): a giant component plus many small ones.
    rng = np.random.default_rng(2)
    nodes = edges = args.graph_factor * n
    src, dst = rng.integers(0, nodes, edges), rng.integers(0, nodes, edges)
    for method in ("scipy", "numpy"):
        def components(method=method):
            seconds, labels = timed(lambda: connected_components(nodes, src, dst, method=method))
            return seconds, f"{edges / seconds:,.0f} edges/s ({labels.max() + 1:,} comps)", edges / seconds, float("nan")

        row(f"components ({nodes:,} nodes, {edges:,} edges)", method, components)


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
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="torch engine's device")
    parser.add_argument("--faiss-threads", type=int, help="faiss-cpu threads (default: faiss's, all cores)")
    parser.add_argument("--deadline-s", type=float, help="seconds for the whole run; later ops are skipped")
    parser.add_argument("--json", help="write the table as JSON here (after each row)")
    parser.add_argument("--markdown", help="write the table as markdown here (after each row)")
    args = parser.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    deadline = Deadline(args.deadline_s)
    label = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    table = Table("index: k-means, k-NN, dedup graph (faiss-cpu vs torch)", COLUMNS, args.json, args.markdown,
                  {"date": str(datetime.date.today()), "commit": commit(), "torch": torch.__version__,
                   "faiss": faiss.__version__, "torch device": label, "cpu": platform.processor() or platform.machine(),
                   "cores": os.cpu_count(), "faiss threads": faiss.omp_get_max_threads(),
                   "k-means": f"{args.clusters} clusters x {args.iters} iterations",
                   "k-NN/range": f"{args.queries:,} queries against N"})
    for n in args.sizes:
        for dim in args.dims:
            bench_size(n, dim, args, device, table, deadline)
    table.print()


if __name__ == "__main__":
    main()
