"""Cross-shard dedup by hash bucket: exact and perceptual duplicates as numpy arrays, no per-row objects.

Rows are (bucket, hash, key) with the key an int64 (the record's input position). Every row of one
content hash lands in one bucket, and so does every pHash that shares a band value with another,
so buckets are resolved independently (in parallel, restartably) and their results concatenated:

* exact: a stable sort by the 128-bit content hash (two uint64 words) inside the bucket; the first
  key of each run of equal hashes wins and every later key is its duplicate (final, no greedy).
* perceptual (64-bit pHash, Hamming distance <= d): the hash is cut into d + 1 bands; two hashes
  within d bits agree on at least one band (pigeonhole), so candidates are pairs sharing a band
  value, each verified by its Hamming distance.

`greedy_result` then replays the streaming rule of a single pass in key order over only the keys
that appear in pairs: an exact duplicate is dropped; otherwise the key is a duplicate of the nearest
earlier *kept* key within d (ties: the smallest key), else kept. A chain A~B, B~C, A!~C gives
B -> A and keeps C.

Memory (the bucket phase, per row of the bucket, under tracemalloc): exact 45 B/row (tests hold it
to 48); perceptual 46 B per band entry, d + 1 entries a row (tests: 56), plus the verified pairs
(17 B each); candidates are verified 2**18 at a time, so a large band group costs time, not memory.
Candidates: for uniform hashes about (d + 1) * n / 2**(64 / (d + 1)) per row of n rows, so a
large d at a large n is costly (see docs/curation.md); real near-copies add their own pairs.
"""
from __future__ import annotations

import numpy as np

from lvdtool.ingest.perceptual_index import _band_layout

EXACT_ROW = np.dtype([("bucket", "<u4"), ("hi", "<u8"), ("lo", "<u8"), ("key", "<i8")])
BAND_ROW = np.dtype([("bucket", "<u4"), ("band", "u1"), ("phash", "<u8"), ("key", "<i8")])
RESULT_ROW = np.dtype([("key", "<i8"), ("of", "<i8"), ("dist", "i1")])  # dist -1: identical bytes
EXACT_DIST = -1
_PAIR_CHUNK = 1 << 18  # candidate pairs verified at a time (bounds the memory of a large band group)


def hash_words(hex_hashes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The first 128 bits of hex content hashes as (hi, lo) uint64 words."""
    if not hex_hashes:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    words = np.frombuffer(bytes.fromhex("".join(h[:32] for h in hex_hashes)), dtype=">u8").reshape(-1, 2)
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads band values (not uniform) evenly over the buckets."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def band_values(phash: np.ndarray, band: int, max_distance: int) -> np.ndarray:
    shift, width = _band_layout(max_distance + 1)[band]
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    return (phash >> np.uint64(shift)) & mask


def exact_rows(keys: np.ndarray, hi: np.ndarray, lo: np.ndarray, buckets: int) -> np.ndarray:
    """One shard's exact rows, ordered by bucket, keys ascending inside a bucket."""
    rows = np.empty(len(keys), EXACT_ROW)
    rows["bucket"] = hi % np.uint64(buckets)
    rows["hi"], rows["lo"], rows["key"] = hi, lo, keys
    return rows[np.lexsort((rows["key"], rows["bucket"]))]


def band_rows(keys: np.ndarray, phash: np.ndarray, max_distance: int, buckets: int) -> np.ndarray:
    """One shard's band entries (d + 1 per row), ordered by bucket, keys ascending inside a bucket."""
    n, n_bands = len(keys), max_distance + 1
    rows = np.empty(n * n_bands, BAND_ROW)
    for band in range(n_bands):
        part = rows[band * n : (band + 1) * n]
        value = band_values(phash, band, max_distance)
        part["bucket"] = _mix(value ^ (np.uint64(band) << np.uint64(58))) % np.uint64(buckets)
        part["band"], part["phash"], part["key"] = band, phash, keys
    return rows[np.lexsort((rows["key"], rows["bucket"]))]


def bucket_slice(rows: np.ndarray, bucket: int) -> np.ndarray:
    """The rows of one bucket from a bucket-ordered array (binary search: touches log n rows of a memmap)."""
    column = rows["bucket"]
    lo, hi = np.searchsorted(column, bucket, "left"), np.searchsorted(column, bucket, "right")
    return rows[lo:hi]


def resolve_exact(hi: np.ndarray, lo: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate keys, the first key of their content hash) for rows given in ascending key order."""
    order = np.argsort(hi, kind="stable")
    sorted_hi = hi[order]
    same = sorted_hi[1:] == sorted_hi[:-1]
    del sorted_hi
    members = np.zeros(len(order), bool)
    members[1:] |= same
    members[:-1] |= same
    cand = order[members]  # rows sharing their high word with another row: few
    del order, members, same
    c_hi, c_lo, c_key = hi[cand], lo[cand], keys[cand]
    o = np.lexsort((c_key, c_lo, c_hi))
    c_hi, c_lo, c_key = c_hi[o], c_lo[o], c_key[o]
    starts = np.ones(len(c_key), bool)
    starts[1:] = (c_hi[1:] != c_hi[:-1]) | (c_lo[1:] != c_lo[:-1])
    first = c_key[np.flatnonzero(starts)][np.cumsum(starts) - 1]
    later = ~starts
    return c_key[later], first[later]


def resolve_bands(band: np.ndarray, phash: np.ndarray, keys: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (a < b, distance <= d) of keys sharing a band value, each once (sorted by a, b)."""
    if max_distance + 1 > 1:  # band widths <= 32 bits: the band id fits above the value
        comb = np.zeros(len(keys), np.uint64)
        for b in range(max_distance + 1):
            sel = band == b
            comb[sel] = band_values(phash[sel], b, max_distance) | (np.uint64(b) << np.uint64(56))
    else:
        comb = phash.copy()
    order = np.argsort(comb, kind="stable")  # stable: keys stay ascending inside a group
    comb = comb[order]
    same = comb[1:] == comb[:-1]
    members = np.zeros(len(order), bool)
    members[1:] |= same
    members[:-1] |= same
    idx = order[members]
    g_comb = comb[members]
    del comb, order, members, same
    g_hash, g_key = phash[idx], keys[idx]
    del idx
    # group end (exclusive) of each member; member p pairs with p+1 .. end-1
    boundaries = np.flatnonzero(np.r_[True, g_comb[1:] != g_comb[:-1], True])
    ends = np.repeat(boundaries[1:], np.diff(boundaries))
    counts = ends - np.arange(len(g_key)) - 1
    total = np.cumsum(counts)
    out_a, out_b, out_d = [], [], []
    start = 0
    while start < len(g_key):
        stop = int(np.searchsorted(total, (total[start - 1] if start else 0) + _PAIR_CHUNK, "right"))
        stop = max(stop, start + 1)
        c = counts[start:stop]
        first = np.repeat(np.arange(start, stop), c)
        offsets = np.arange(len(first)) - np.repeat(np.cumsum(c) - c, c)
        second = first + 1 + offsets
        dist = np.bitwise_count(g_hash[first] ^ g_hash[second])
        ok = dist <= max_distance
        out_a.append(g_key[first[ok]])
        out_b.append(g_key[second[ok]])
        out_d.append(dist[ok].astype(np.uint8))
        start = stop
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    a, b, d = np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_d)
    return unique_pairs(a, b, d)


def unique_pairs(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs found through several bands, once each, sorted by (a, b)."""
    o = np.lexsort((b, a))
    a, b, d = a[o], b[o], d[o]
    keep = np.ones(len(a), bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep], d[keep]


def greedy_result(exact_dup: np.ndarray, exact_of: np.ndarray, pair_a: np.ndarray, pair_b: np.ndarray,
                  pair_d: np.ndarray) -> np.ndarray:
    """The single-pass result from the pairs: RESULT_ROW records sorted by key (only the duplicates)."""
    exact_dup = np.asarray(exact_dup, np.int64)
    order = np.argsort(exact_dup)
    exact_dup, exact_of = exact_dup[order], np.asarray(exact_of, np.int64)[order]
    # exact duplicates are never queried nor stored in the perceptual index
    drop = np.isin(pair_a, exact_dup) | np.isin(pair_b, exact_dup)
    pa, pb, pd = pair_a[~drop], pair_b[~drop], pair_d[~drop]
    nodes = np.unique(np.concatenate([pa, pb]))
    ai, bi = np.searchsorted(nodes, pa), np.searchsorted(nodes, pb)
    o = np.lexsort((ai, pd, bi))  # per later key: nearest first, then the smallest key
    ai, bi, pd = ai[o], bi[o], pd[o]
    of = np.full(len(nodes), -1, np.int64)  # node -> node it duplicates, -1: kept
    dist = np.zeros(len(nodes), np.int8)
    group = np.flatnonzero(np.r_[True, bi[1:] != bi[:-1]]) if len(bi) else np.zeros(0, np.int64)
    is_later = np.zeros(len(nodes), bool)
    is_later[bi] = True
    # a key that is never the later one of a pair is kept; where a group's best candidate is such a key, it decides
    easy = ~is_later[ai[group]]
    of[bi[group[easy]]] = ai[group[easy]]
    dist[bi[group[easy]]] = pd[group[easy]]
    ends = np.r_[group[1:], len(bi)]
    for g_start, g_end in zip(group[~easy].tolist(), ends[~easy].tolist()):  # chains: in key order
        for j in range(g_start, g_end):
            a = ai[j]
            if of[a] < 0:
                of[bi[j]], dist[bi[j]] = a, pd[j]
                break
    dup = np.flatnonzero(of >= 0)
    result = np.empty(len(exact_dup) + len(dup), RESULT_ROW)
    result["key"] = np.concatenate([exact_dup, nodes[dup]])
    result["of"] = np.concatenate([exact_of, nodes[of[dup]]])
    result["dist"] = np.concatenate([np.full(len(exact_dup), EXACT_DIST, np.int8), dist[dup]])
    return result[np.argsort(result["key"], kind="stable")]
