"""The files of the bucketed ingest dedup under an artifact's `_work/dedup/`, one restart unit each.

    rows/<shard>.exact.npy, rows/<shard>.bands.npy   per shard: its ok rows, ordered by bucket
    rows/<shard>.done                                 written last: the shard's rows are complete
    buckets/bucket-<b>.npz                            per bucket: exact duplicates and verified pairs
    result.npy                                        the greedy result (RESULT_ROW, sorted by key)
    final/<shard>.json                                per shard: its final index is written (+ counts)

Every file is written to a temporary name and renamed, so a unit either exists whole or not at
all; a killed phase is resumed by redoing only the units whose file is missing. Every unit's
content is a pure function of the inputs, so two ranks doing the same unit write the same bytes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from lvdtool.artifacts.atomic import atomic_path, atomic_write_json
from lvdtool.ingest.bucket_dedup import (
    BAND_ROW,
    EXACT_DIST,
    EXACT_ROW,
    RESULT_ROW,
    band_rows,
    bucket_slice,
    exact_rows,
    greedy_result,
    hash_words,
    resolve_bands,
    resolve_exact,
    unique_pairs,
)

ROWS_PER_BUCKET = 1 << 20  # the auto bucket count keeps a bucket's exact rows near 1M (about 50 MB to resolve)
MAX_BUCKETS = 1 << 16


def auto_buckets(n_records: int) -> int:
    """A bucket count from the record count only (so a rerun with other process counts agrees)."""
    return int(min(MAX_BUCKETS, max(16, math.ceil(n_records / ROWS_PER_BUCKET))))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:  # an empty array cannot be memory-mapped
        return np.load(path, allow_pickle=False)


@dataclass(frozen=True)
class DedupWork:
    root: Path  # <artifact>/_work/dedup
    buckets: int
    exact: bool
    perceptual: bool
    max_distance: int
    perceptual_keys: tuple[int, int] = (0, 1 << 62)  # keys [lo, hi) that take part in the perceptual dedup

    # ----- per shard: rows -------------------------------------------------------
    def rows_done(self, shard: str) -> bool:
        return (self.root / "rows" / f"{shard}.done").exists()

    def write_rows(self, shard: str, index: pa.Table) -> int:
        """The shard's ok rows as bucket rows (exact and/or band entries); returns the ok row count."""
        ok = np.asarray(index.column("status").to_numpy(zero_copy_only=False) == "ok")
        keys = index.column("position").to_numpy()[ok].astype(np.int64)
        rows_dir = self.root / "rows"
        if self.exact:
            hexes = index.column("content_hash").filter(pa.array(ok)).to_pylist()
            hi, lo = hash_words(hexes)
            _save_npy(rows_dir / f"{shard}.exact.npy", exact_rows(keys, hi, lo, self.buckets))
        if self.perceptual:
            phash = index.column("phash").filter(pa.array(ok)).to_numpy().astype(np.uint64)
            lo, hi = self.perceptual_keys
            take = (keys >= lo) & (keys < hi)
            _save_npy(rows_dir / f"{shard}.bands.npy", band_rows(keys[take], phash[take], self.max_distance, self.buckets))
        atomic_write_json(rows_dir / f"{shard}.done", {"ok_rows": int(ok.sum())})
        return int(ok.sum())

    # ----- per bucket ------------------------------------------------------------
    def bucket_path(self, bucket: int) -> Path:
        return self.root / "buckets" / f"bucket-{bucket:06d}.npz"

    def bucket_done(self, bucket: int) -> bool:
        return self.bucket_path(bucket).exists()

    def _gather(self, shards: list[str], kind: str, bucket: int, dtype: np.dtype) -> np.ndarray:
        """One bucket's rows from every shard, in shard (so key) order; a slice per shard file."""
        parts = [bucket_slice(_load_npy(self.root / "rows" / f"{s}.{kind}.npy"), bucket) for s in shards]
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    def resolve_bucket(self, bucket: int, shards: list[str]) -> None:
        empty_i, empty_u = np.zeros(0, np.int64), np.zeros(0, np.uint8)
        exact_dup = exact_of = pair_a = pair_b = empty_i
        pair_d = empty_u
        if self.exact:
            rows = self._gather(shards, "exact", bucket, EXACT_ROW)
            exact_dup, exact_of = resolve_exact(rows["hi"], rows["lo"], rows["key"])
            del rows
        if self.perceptual:
            rows = self._gather(shards, "bands", bucket, BAND_ROW)
            pair_a, pair_b, pair_d = resolve_bands(rows["band"], rows["phash"], rows["key"], self.max_distance)
            del rows
        path = self.bucket_path(bucket)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, exact_dup=exact_dup, exact_of=exact_of, pair_a=pair_a, pair_b=pair_b, pair_d=pair_d)

    # ----- greedy ----------------------------------------------------------------
    @property
    def result_path(self) -> Path:
        return self.root / "result.npy"

    def write_result(self) -> np.ndarray:
        """Concatenate every bucket's output and replay the greedy rule; only duplicates are held."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("exact_dup", "exact_of", "pair_a", "pair_b", "pair_d")}
        for b in range(self.buckets):
            with np.load(self.bucket_path(b), allow_pickle=False) as z:
                for k in parts:
                    parts[k].append(z[k])
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        a, b, d = unique_pairs(cat["pair_a"], cat["pair_b"], cat["pair_d"])  # a pair may share several bands
        result = greedy_result(cat["exact_dup"], cat["exact_of"], a, b, d)
        _save_npy(self.result_path, result)
        return result

    def read_result(self) -> np.ndarray:
        return _load_npy(self.result_path)

    # ----- per shard: final index --------------------------------------------------
    def final_marker(self, shard: str) -> Path:
        return self.root / "final" / f"{shard}.json"

    def final_done(self, shard: str) -> dict | None:
        p = self.final_marker(shard)
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None


def apply_duplicates(index: pa.Table, result: np.ndarray, key_of: Callable[[int], str]) -> tuple[pa.Table, dict]:
    """The shard's final index: its rows named in `result` become `duplicate`; returns (table, counts)."""
    positions = index.column("position").to_numpy()
    lo, hi = np.searchsorted(result["key"], [positions.min(), positions.max() + 1]) if len(positions) else (0, 0)
    mine = np.asarray(result[lo:hi])
    status = index.column("status").to_pylist()
    error = index.column("error").to_pylist()
    dup_of = index.column("duplicate_of").to_pylist()
    order = np.argsort(positions, kind="stable")
    rows = order[np.searchsorted(positions, mine["key"], sorter=order)]
    exact = 0
    for i, of, dist in zip(rows.tolist(), mine["of"].tolist(), mine["dist"].tolist()):
        dup_of[i] = key_of(of)
        reason = "identical bytes" if dist == EXACT_DIST else f"perceptual hash within {dist} bits"
        exact += dist == EXACT_DIST
        status[i], error[i] = "duplicate", f"duplicate of {dup_of[i]} ({reason})"
    for name, values in (("status", status), ("error", error), ("duplicate_of", dup_of)):
        index = index.set_column(index.schema.get_field_index(name), name, pa.array(values, pa.string()))
    counts: dict[str, int] = {}
    for s in status:
        counts[s] = counts.get(s, 0) + 1
    return index, {"status": counts, "exact": exact, "perceptual": len(mine) - exact}


__all__ = ["DedupWork", "RESULT_ROW", "apply_duplicates", "auto_buckets"]
