"""crawl-ingest's bucketed dedup: time to resolve one bucket (exact and perceptual) and the greedy
pass, on random hashes with planted copies, and the projection to 1.2B records.

    python benchmarks/ingest_dedup.py                 # one bucket of 1M rows (auto_buckets' size), d = 2
    python benchmarks/ingest_dedup.py --rows 250000 --distance 4
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lvdtool.ingest.bucket_dedup import band_rows, exact_rows, greedy_result, resolve_bands, resolve_exact


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--distance", type=int, default=2)
    ap.add_argument("--copies", type=float, default=0.05, help="share of rows that copy an earlier row")
    ap.add_argument("--total", type=float, default=1.2e9, help="records of the projection")
    ap.add_argument("--workers", type=int, default=512, help="processes of the projection (32 nodes x 16)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n = args.rows
    keys = np.arange(n, dtype=np.int64)
    hi, lo = rng.integers(0, 2**63, n, dtype=np.uint64), rng.integers(0, 2**63, n, dtype=np.uint64)
    phash = rng.integers(0, 2**63, n, dtype=np.uint64) | (rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63))
    copies = rng.choice(np.arange(1, n), int(args.copies * n), replace=False)
    sources = (copies * rng.random(len(copies))).astype(np.int64)
    half = len(copies) // 2  # half exact copies, half a near copy (one flipped bit)
    hi[copies[:half]], lo[copies[:half]] = hi[sources[:half]], lo[sources[:half]]
    phash[copies] = phash[sources]
    phash[copies[half:]] ^= np.uint64(1) << rng.integers(0, 64, len(copies) - half).astype(np.uint64)

    timings = {}
    t = time.perf_counter()
    ex = exact_rows(keys, hi, lo, 1)
    bd = band_rows(keys, phash, args.distance, 1)
    timings["rows (sort into buckets)"] = time.perf_counter() - t
    t = time.perf_counter()
    dup, of = resolve_exact(ex["hi"], ex["lo"], ex["key"])
    timings["exact bucket"] = time.perf_counter() - t
    t = time.perf_counter()
    a, b, d = resolve_bands(bd["band"], bd["phash"], bd["key"], args.distance)
    timings["perceptual bucket"] = time.perf_counter() - t
    t = time.perf_counter()
    result = greedy_result(dup, of, a, b, d)
    timings["greedy pass"] = time.perf_counter() - t
    print(f"{n:,} rows, d = {args.distance}: {len(dup):,} exact duplicates, {len(a):,} perceptual pairs, "
          f"{len(result):,} duplicates in all")
    per_row = {k: v / n for k, v in timings.items()}
    print(f"| step | seconds | us/row | projected {args.total:.2g} rows on {args.workers} processes |")
    print("|---|---:|---:|---:|")
    for name, seconds in timings.items():
        workers = 1 if name == "greedy pass" else args.workers  # the greedy pass is one process
        projected = per_row[name] * args.total / workers
        print(f"| {name} | {seconds:.3f} | {per_row[name] * 1e6:.2f} | {projected:.1f} s |")


if __name__ == "__main__":
    main()
