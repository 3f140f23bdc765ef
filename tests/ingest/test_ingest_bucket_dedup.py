"""The bucketed cross-shard dedup against the one-pass rule, and its memory per row under tracemalloc."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from dedup_reference import reference_dedup
from lvdtool.ingest.bucket_dedup import greedy_result
from lvdtool.ingest.dedup_work import DedupWork

SHARD = 250


def _flip(value: int, bits: list[int]) -> int:
    for b in bits:
        value ^= 1 << b
    return value


def _planted(n: int, d: int, seed: int) -> tuple[list[str], list[int]]:
    """Random hashes with planted exact copies, near copies, chains, ties and nearest-vs-earliest cases."""
    rng = np.random.default_rng(seed)
    content = [rng.bytes(32).hex() for _ in range(n)]
    phash = [int(x) for x in rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)]
    for i in range(0, n - 900, 37):  # exact copies, often in another shard
        content[i + 600] = content[i]
        phash[i + 600] = phash[i]
    if d == 0:
        for i in range(5, n - 700, 41):
            phash[i + 700] = phash[i]  # same pHash, other bytes
        return content, phash
    for i in range(11, n - 800, 53):
        bits = rng.choice(64, size=4 * d, replace=False).tolist()
        a = phash[i]
        phash[i + 300] = _flip(a, bits[:d])  # B ~ A
        phash[i + 800] = _flip(a, bits[: 2 * d])  # C ~ B, C !~ A (2d bits): a chain, C is kept
        phash[i + 301] = _flip(a, bits[2 * d : 3 * d])  # another copy of A
        phash[i + 302] = _flip(a, bits[:1])  # nearer to A than B is: nearest wins (A, distance 1)
    for i in range(3, n - 500, 97):  # a tie: D is d bits from both A and B (A, B 2d apart): the smaller key wins
        bits = rng.choice(64, size=2 * d, replace=False).tolist()
        phash[i + 200] = _flip(phash[i], bits)
        phash[i + 500] = _flip(phash[i], bits[:d])
    return content, phash


def _bucketed(tmp_path, content, phash, d, buckets, exact=True, perceptual=True, perceptual_keys=(0, 1 << 62)):
    n = len(content)
    work = DedupWork(tmp_path / f"w{buckets}", buckets, exact, perceptual, d, perceptual_keys)
    names = [f"shard-{s:06d}" for s in range(-(-n // SHARD))]
    status = np.array(["ok"] * n, dtype=object)
    status[7::19] = "decode_error"  # not ok rows take no part
    for s, name in enumerate(names):
        sl = slice(s * SHARD, (s + 1) * SHARD)
        work.write_rows(name, pa.table({"position": pa.array(np.arange(n)[sl], pa.int64()), "status": pa.array(status[sl].tolist()),
                                        "content_hash": pa.array(content[sl]), "phash": pa.array(phash[sl], pa.uint64())}))
    for b in range(buckets):
        work.resolve_bucket(b, names)
    result = work.write_result()
    ok = [i for i in range(n) if status[i] == "ok"]
    return {int(k): (int(o), int(dd)) for k, o, dd in result.tolist()}, ok


@pytest.mark.parametrize("d", [0, 2, 4])
@pytest.mark.parametrize("buckets", [1, 16])
def test_buckets_reproduce_the_one_pass_rule(tmp_path, d, buckets):
    content, phash = _planted(3000, d, seed=d)
    got, ok = _bucketed(tmp_path, content, phash, d, buckets)
    want = reference_dedup(ok, [content[i] for i in ok], [phash[i] for i in ok], d)
    assert got == want
    assert sum(v[1] == -1 for v in want.values()) >= 50 and sum(v[1] >= 0 for v in want.values()) >= (40 if d else 30)
    if d:
        live = set(ok)
        chains = [i for i in range(11, 3000 - 800, 53) if {i, i + 300, i + 800} <= live and got.get(i + 300) == (i, d) and i + 800 not in got]
        assert len(chains) >= 5, "A~B, B~C, A!~C: B is a duplicate of A and C is kept"
        ties = [i for i in range(3, 3000 - 500, 97) if {i, i + 200, i + 500} <= live and i + 200 not in got and got.get(i + 500) == (i, d)]
        assert len(ties) >= 5, "equally near to two kept keys: the smaller key wins"


def test_chain_tie_and_nearest_by_hand():
    # keys 0..4: A=0; B=1 is 2 bits from A; C=2 is 2 bits from B, 4 from A; D=3 is 1 bit from A and 1 from B
    a, b, dist = np.array([0, 1, 0, 0, 1]), np.array([1, 2, 2, 3, 3]), np.array([2, 2, 4, 1, 1], np.uint8)
    keep = dist <= 2
    result = greedy_result(np.array([4]), np.array([0]), a[keep], b[keep], dist[keep])
    assert result.tolist() == [(1, 0, 2), (3, 0, 1), (4, 0, -1)], "B -> A, C kept (B is not kept), D -> A (tie: smaller key), 4 identical to 0"


@pytest.mark.parametrize(("exact", "perceptual"), [(True, False), (False, True)])
def test_each_kind_alone(tmp_path, exact, perceptual):
    content, phash = _planted(1500, 2, seed=9)
    got, ok = _bucketed(tmp_path, content, phash, 2, 4, exact=exact, perceptual=perceptual)
    assert got == reference_dedup(ok, [content[i] for i in ok], [phash[i] for i in ok], 2, exact, perceptual)
    assert got and all((v[1] == -1) == exact for v in got.values())


def test_perceptual_key_range_leaves_other_records_alone(tmp_path):
    content, phash = _planted(1500, 2, seed=4)
    got, ok = _bucketed(tmp_path, content, phash, 2, 4, exact=False, perceptual_keys=(0, 700))
    inside = [i for i in ok if i < 700]
    assert got == reference_dedup(inside, [content[i] for i in inside], [phash[i] for i in inside], 2, exact=False)
    assert len(got) >= 10 and all(k < 700 and v[0] < 700 for k, v in got.items())


def _peak_per_row(tmp_path, n: int, exact: bool, d: int) -> float:
    rng = np.random.default_rng(n)
    content = [rng.bytes(16).hex() for _ in range(n)]
    phash = rng.integers(0, 2**62, n, dtype=np.int64).astype(np.uint64) * np.uint64(4)
    for i in range(0, n - 10, 10):  # one row in ten is a planted copy
        content[i + 5] = content[i]
        phash[i + 7] = phash[i] ^ np.uint64(1 << 3)
    work = DedupWork(tmp_path / f"m{n}{exact}", 1, exact, not exact, d)
    work.write_rows("s", pa.table({"position": pa.array(np.arange(n), pa.int64()), "status": pa.array(["ok"] * n),
                                   "content_hash": pa.array(content), "phash": pa.array(phash, pa.uint64())}))
    tracemalloc.start()
    work.resolve_bucket(0, ["s"])  # every row in one bucket: the worst case of one bucket
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / n


EXACT_BUDGET = 48  # B/row: hi, lo, key gathered (24) + a sort order (8) + the sorted high words (8) + masks
BAND_BUDGET = 56  # B per band entry (d + 1 a row): the gathered entries (21) + band values, order, sorted values (24)


@pytest.mark.parametrize("n", [50_000, 100_000, 200_000])
def test_bucket_memory_per_row(tmp_path, n):
    exact = _peak_per_row(tmp_path, n, exact=True, d=2)
    bands = _peak_per_row(tmp_path, n, exact=False, d=2)
    print(f"n={n}: exact {exact:.1f} B/row, bands (d=2, 3 entries a row) {bands:.1f} B/row")
    assert exact <= EXACT_BUDGET, f"exact bucket: {exact:.1f} B/row"
    assert bands <= 3 * BAND_BUDGET, f"band bucket: {bands:.1f} B/row"
