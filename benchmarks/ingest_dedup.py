"""crawl-ingest's bucketed dedup: time to resolve one bucket (exact and perceptual) and the greedy
pass, on random hashes with planted copies, and the projection to 1.2B records.

    python benchmarks/ingest_dedup.py                 # one bucket of 1M rows (auto_buckets' size), d = 2
    python benchmarks/ingest_dedup.py --rows 250000 --distance 4
    python benchmarks/ingest_dedup.py --rows 200000 --as-of 1.2e9   # band groups as large as at 1.2B

Perceptual candidates are the rows sharing a band value, and a band value is shared by about
N / 2^width rows of the whole crawl (every row with that value lands in the same bucket): a bucket
of a 1.2B crawl holds large groups, a 1M-row crawl small ones. `--as-of N` narrows the pHash's band
values so that groups are as large as in a crawl of N records, which is what the time at that
scale depends on (candidate verifications per row).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from lvdtool.ingest.bucket_dedup import band_rows, band_values, exact_rows, greedy_result, resolve_bands, resolve_exact
from lvdtool.ingest.perceptual_index import _band_layout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--distance", type=int, default=2)
    ap.add_argument("--copies", type=float, default=0.05, help="share of rows that copy an earlier row")
    ap.add_argument("--total", type=float, default=1.2e9, help="records of the projection")
    ap.add_argument("--workers", type=int, default=512, help="processes of the projection (32 nodes x 16)")
    ap.add_argument("--as-of", type=float, default=None, help="simulate the band-group sizes of a crawl of this many records")
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
    if args.as_of:
        for shift, width in _band_layout(args.distance + 1):  # keep log2(n / group) random bits per band
            group = args.as_of / 2.0 ** width
            keep = max(1, int(round(np.log2(max(n / group, 2)))))
            if keep < width:
                drop = np.uint64(((1 << (width - keep)) - 1) << (shift + keep))
                phash &= ~drop

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
    print(f"{n:,} rows, d = {args.distance}{f', band groups as at {args.as_of:.2g} records' if args.as_of else ''}: "
          f"{len(dup):,} exact duplicates, {len(a):,} perceptual pairs, {len(result):,} duplicates in all")
    per_row = {k: v / n for k, v in timings.items()}
    print(f"| step | seconds | us/row | projected {args.total:.2g} rows on {args.workers} processes |")
    print("|---|---:|---:|---:|")
    for name, seconds in timings.items():
        if name == "perceptual bucket" or (args.as_of and name == "greedy pass"):
            continue  # the perceptual time follows the candidates (below); --as-of inflates the pairs
        workers = 1 if name == "greedy pass" else args.workers  # the greedy pass is one process
        print(f"| {name} | {seconds:.3f} | {per_row[name] * 1e6:.2f} | {per_row[name] * args.total / workers:.1f} s |")
    layout = _band_layout(args.distance + 1)
    here = sum(_pairs_sharing(band_values(bd["phash"][bd["band"] == i], i, args.distance)) for i in range(len(layout)))
    rate = here / timings["perceptual bucket"]
    at_scale = sum(args.total * (args.total / 2.0 ** width) / 2 for _, width in layout)
    print(f"| perceptual bucket: {here:.3g} candidate pairs | {timings['perceptual bucket']:.3f} | "
          f"{rate:.3g} pairs/s | {at_scale:.2g} candidates at {args.total:.2g}: {at_scale / rate / args.workers:.0f} s |")


def _pairs_sharing(values: np.ndarray) -> int:
    """Candidate pairs of one band: rows sharing a value, g (g - 1) / 2 per group of g."""
    _, counts = np.unique(values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


if __name__ == "__main__":
    main()
