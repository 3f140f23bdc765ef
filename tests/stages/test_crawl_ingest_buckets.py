"""crawl-ingest's cross-shard dedup bucket by bucket: 40 shards, 4 local processes, a kill, a requeue."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from lvd_runner import lvd
from lvdtool.artifacts import ImagesArtifact, read_manifest
from lvdtool.ingest import phash64

sys.path.insert(0, str(Path(__file__).parents[1] / "ingest"))
from dedup_reference import reference_dedup  # noqa: E402

D = 4  # the tests plant copies within 4 bits; the rule is the same at any distance
N, SHARD = 200, 5  # 40 shards
ARGS = ["--shard-size", str(SHARD), "process.min_side=16", "dedup.perceptual_dirs=true", f"dedup.max_distance={D}"]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _hash_of(data: bytes) -> int:
    return phash64(Image.open(io.BytesIO(data)).convert("RGB"))


def _tiles(photos: dict[str, Image.Image]) -> list[Image.Image]:
    tiles = []
    for im in photos.values():
        for top in range(0, im.height - 48, 48):
            for left in range(0, im.width - 48, 48):
                t = im.crop((left, top, left + 48, top + 48))
                if np.asarray(t.convert("L"), float).std() > 25:
                    tiles.append(t)
    return tiles


def _chain(tiles: list[Image.Image]) -> tuple[bytes, bytes, bytes]:
    """A real chain: A ~ B and B ~ C within D bits, A !~ C (progressively stronger edits of one tile)."""
    edits = [lambda t, f=f: ImageEnhance.Contrast(t).enhance(f) for f in (0.8, 0.6, 0.4)]
    edits += [lambda t, r=r: t.filter(ImageFilter.GaussianBlur(r)) for r in (0.6, 1.0, 1.4, 2.0)]
    for t in tiles:
        a = _png(t)
        steps = [_png(e(t)) for e in edits]
        for i, b in enumerate(steps):
            for c in steps[i + 1 :]:
                ha, hb, hc = _hash_of(a), _hash_of(b), _hash_of(c)
                if 0 < (ha ^ hb).bit_count() <= D and 0 < (hb ^ hc).bit_count() <= D and (ha ^ hc).bit_count() > D:
                    return a, b, c
    raise AssertionError("no chain among the edits of these photos")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, photos) -> Path:
    """200 real image files; planted: exact copies and a JPEG re-encode in far shards, and a chain."""
    tiles = _tiles(photos)
    assert len(tiles) >= N
    files = {i: (_png(tiles[i]), "png") for i in range(N)}
    files[103] = files[3]
    files[188] = files[17]
    for i in range(40, 100):  # a JPEG re-encode of tile i within D bits, as a later record
        buf = io.BytesIO()
        tiles[i].save(buf, "JPEG", quality=85)
        if 0 < (_hash_of(buf.getvalue()) ^ _hash_of(files[i][0])).bit_count() <= D:
            files[150] = (buf.getvalue(), "jpg")
            files["reencoded"] = i
            break
    a, b, c = _chain(tiles[100:])
    files[20], files[90], files[160] = (a, "png"), (b, "png"), (c, "png")
    root = tmp_path_factory.mktemp("tiles") / "images"
    root.mkdir()
    for i in range(N):
        data, ext = files[i]
        (root / f"{i:04d}.{ext}").write_bytes(data)
    (root / "reencoded.txt").write_text(str(files["reencoded"]))  # not an image: no record
    return root


def _statuses(out: Path) -> dict[int, tuple[str, str | None]]:
    return {r["position"]: (r["status"], r["duplicate_of"]) for r in ImagesArtifact(out).read_index().to_pylist()}


def _reference(out: Path) -> dict[int, tuple[str, str | None]]:
    """The one-pass rule applied to the ok rows' hashes as the index stores them."""
    rows = [r for r in ImagesArtifact(out).read_index().to_pylist() if r["status"] in ("ok", "duplicate")]
    dup = reference_dedup([r["position"] for r in rows], [r["content_hash"] for r in rows], [r["phash"] for r in rows], D)
    return {r["position"]: ("duplicate", f"{dup[r['position']][0]:012d}") if r["position"] in dup else ("ok", None) for r in rows}


@pytest.fixture(scope="module")
def one_process(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "art"
    lvd("crawl-ingest", "--dir", str(folder), "--out", str(out), *ARGS)
    return out


def test_four_processes_equal_one_and_the_one_pass_rule(folder, one_process, tmp_path):
    out = tmp_path / "four"
    lvd("crawl-ingest", "--dir", str(folder), "--out", str(out), "--processes", "4", *ARGS)
    m = read_manifest(out)
    assert m.complete and len(m.shards) == N // SHARD
    got = _statuses(out)
    assert got == _statuses(one_process)
    assert got == _reference(one_process)
    reencoded = int((folder / "reencoded.txt").read_text())
    assert got[103] == ("duplicate", "000000000003") and got[188] == ("duplicate", "000000000017"), "exact, across shards"
    assert got[150] == ("duplicate", f"{reencoded:012d}"), "a JPEG re-encode 26+ shards later"
    assert got[90] == ("duplicate", "000000000020") and got[160] == ("ok", None), "chain: B -> A, C kept"
    assert m.stats["duplicates"]["exact"] >= 2 and m.stats["duplicates"]["perceptual"] >= 2
    index = ImagesArtifact(out).read_index()
    assert sum(1 for e in index.column("error").to_pylist() if e and "perceptual hash within" in e) == m.stats["duplicates"]["perceptual"]


def test_kill_in_the_bucket_phase_then_requeue_gives_the_same_result(folder, one_process, tmp_path):
    out = tmp_path / "killed"
    cmd = ["crawl-ingest", "--dir", str(folder), "--out", str(out), *ARGS, "dedup.buckets=8"]
    run_id = {"LVD_RUN_ID": "slurm99.0"}  # a SLURM requeue repeats it
    res = lvd(*cmd, env={**run_id, "LVD_TEST_KILL_AFTER_BUCKETS": "3"}, check=False)
    assert res.returncode == -9, res.stderr
    buckets = sorted((out / "_work" / "dedup" / "buckets").glob("bucket-*.npz"))
    assert len(buckets) == 3 and not read_manifest(out).complete
    mtimes = {p: p.stat().st_mtime_ns for p in buckets}
    # and a finalize lock of this run id left by a holder that is gone
    lock = out / ".finalize-slurm99.0.lock"
    subprocess.run([sys.executable, "-c", f"from lvdtool.artifacts.run_lock import acquire; assert acquire({str(lock)!r})"], check=True)
    res = lvd(*cmd, env=run_id)
    assert read_manifest(out).complete
    assert "breaking a stale lock" in res.stderr + res.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items()), "finished buckets are not redone"
    assert len(list((out / "_work" / "dedup" / "buckets").glob("bucket-*.npz"))) == 8
    assert _statuses(out) == _statuses(one_process)
    assert not list(out.rglob("*.tmp-*"))
    shutil.rmtree(out / "_work" / "dedup" / "final")  # the final-index phase is restartable on its own
    started = read_manifest(out)  # back to the manifest a run writes at its start (an output without
    started.complete, started.shards, started.stats = False, [], {}  # one is refused as a foreign folder)
    started.write(out)
    lvd(*cmd, env=run_id)
    assert read_manifest(out).complete and _statuses(out) == _statuses(one_process)


def test_a_rank_that_waits_in_vain_leaves_the_dedup_to_the_last_one(folder, one_process, tmp_path):
    out = tmp_path / "ranks"
    cmd = ["crawl-ingest", "--dir", str(folder), "--out", str(out), *ARGS, "wait_s=0.3"]
    first = lvd(*cmd, env={"RANK": "0", "WORLD_SIZE": "2", "LVD_RUN_ID": "a"})  # rank 1 has not started
    assert "are not done after" in first.stdout + first.stderr and not read_manifest(out).complete
    assert not (out / "_work" / "dedup" / "buckets").exists()
    lvd(*cmd, env={"RANK": "1", "WORLD_SIZE": "2", "LVD_RUN_ID": "b"})  # finds every shard done: does every unit
    assert read_manifest(out).complete and _statuses(out) == _statuses(one_process)
