"""`lvd crawl-ingest` end to end against a real loopback HTTP server."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from lvd_runner import lvd, popen
from lvdtool.artifacts import ImagesArtifact, read_manifest

FAST = ["fetch.connect_timeout=2", "fetch.read_timeout=2", "fetch.deadline=2.5", "fetch.backoff_base=0.05", "fetch.retries=2"]


def _write_urls(path: Path, base: str, paths: list[str], extra: list[str] = ()) -> Path:
    path.write_text("\n".join([base + p for p in paths] + list(extra)) + "\n")
    return path


def _index(out: Path) -> dict[str, dict]:
    art = ImagesArtifact(out)
    return {r["source"]: r for r in art.read_index().to_pylist()}


def test_every_record_lands_with_its_status(tmp_path, web):
    base, routes, paths = web
    urls = _write_urls(tmp_path / "urls.txt", base, paths, ["ftp://example.com/x.jpg", "http://blocked.example/a.jpg"])
    out = tmp_path / "raw"
    lvd("crawl-ingest", "--urls", str(urls), "--out", str(out), "--allow-private-network", "--shard-size", "8",
        *FAST, "fetch.blocked_domains=[blocked.example]")
    rows = _index(out)
    assert len(rows) == len(paths) + 2, "exactly one index row per input record"
    status = {src.replace(base, ""): r["status"] for src, r in rows.items()}
    expected = {
        "/missing.jpg": "http_404", "/always500.jpg": "http_503", "/slow.jpg": "timeout", "/loop": "too_many_redirects",
        "/text.jpg": "not_image", "/truncated.jpg": "decode_error", "/optout.jpg": "opt_out", "/tiny.jpg": "too_small",
        "/flaky.jpg": "ok", "/alpha.png": "ok", "/astronaut.jpg": "ok", "/astronaut_copy.jpg": "duplicate",
        "/coffee_small.jpg": "duplicate", "ftp://example.com/x.jpg": "bad_url", "http://blocked.example/a.jpg": "blocked",
    }
    for src, want in expected.items():
        assert status[src] == want, f"{src}: {status[src]} != {want} ({rows.get(base + src, rows.get(src))['error']})"
    assert routes.hits["/flaky.jpg"] == 2, "a 500 is retried once, then succeeds"
    assert routes.hits["/missing.jpg"] == 1, "a 404 is never retried"
    assert routes.hits["/always500.jpg"] == 3, "5xx: the first try plus fetch.retries=2"
    astro = rows[base + "/astronaut.jpg"]
    assert rows[base + "/astronaut_copy.jpg"]["duplicate_of"] == astro["key"]
    assert rows[base + "/coffee_small.jpg"]["duplicate_of"] == rows[base + "/coffee.jpg"]["key"]
    # every ok image is in the tar and decodes at the recorded size (longest side <= 512 by default)
    art = ImagesArtifact(out)
    ok = {r["key"]: r for r in rows.values() if r["status"] == "ok"}
    seen = {}
    for s in art.iter_samples():
        img = Image.open(io.BytesIO(s.data))
        img.load()
        seen[s.key] = img.size
        assert img.mode == "RGB" and max(img.size) <= 512
        assert img.size == (ok[s.key]["width"], ok[s.key]["height"])
    assert set(seen) == set(ok)
    alpha = Image.open(io.BytesIO(next(s.data for s in art.iter_samples() if s.key == rows[base + "/alpha.png"]["key"])))
    assert alpha.convert("RGB").getpixel((60, 45))[0] > 240, "transparent pixels are composited on white"
    m = read_manifest(out)
    assert m.complete and m.stats["status"]["ok"] == len(ok) and m.stats["duplicates"] == {"exact": 1, "perceptual": 1}
    assert m.config["fetch"]["allow_private_network"] is True and m.inputs[0].fingerprint.startswith("sha256:")


def test_private_addresses_are_refused_without_the_flag(tmp_path, web):
    base, routes, paths = web
    before = routes.hits.get("/coffee.jpg", 0)
    urls = _write_urls(tmp_path / "urls.txt", base, ["/coffee.jpg", "/rocket.jpg"], ["http://localhost:1/x.jpg"])
    lvd("crawl-ingest", "--urls", str(urls), "--out", str(tmp_path / "o"))
    rows = _index(tmp_path / "o")
    assert {r["status"] for r in rows.values()} == {"private_address"}
    assert routes.hits.get("/coffee.jpg", 0) == before, "no request may reach a private address"


def _tar_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))}


def _keys_status(out: Path) -> list[tuple]:
    return sorted((r["key"], r["source"], r["status"], r["content_hash"]) for r in _index(out).values())


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, web):
    base, _, _ = web
    paths = [f"/scene{i}.jpg" for i in range(12)] + ["/astronaut.jpg", "/coffee.jpg", "/chelsea.jpg", "/rocket.jpg"]
    urls = _write_urls(tmp_path / "urls.txt", base, paths * 3)  # repeats: cross-shard duplicates too
    args = ["crawl-ingest", "--urls", str(urls), "--allow-private-network", "--shard-size", "4", "--threads", "1", *FAST]
    ref = tmp_path / "ref"
    lvd(*args, "--out", str(ref))

    out = tmp_path / "killed"
    proc = popen(*args, "--out", str(out))
    deadline = time.time() + 60
    while time.time() < deadline:
        if len(list((out / "_work").glob("*.done.json"))) >= 2 if (out / "_work").exists() else False:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not read_manifest(out).complete, "the kill must land before the end for this test to mean anything"
    committed = {p.name for p in (out / "_work").glob("*.done.json")}
    mtimes = {n: (out / "_work" / n).stat().st_mtime_ns for n in committed}
    lvd(*args, "--out", str(out))
    assert read_manifest(out).complete
    assert all((out / "_work" / n).stat().st_mtime_ns == t for n, t in mtimes.items()), "finished shards are not redone"
    assert _keys_status(out) == _keys_status(ref)
    assert _tar_digests(out) == _tar_digests(ref), "same image bytes as an uninterrupted run"
    assert not list(out.rglob("*.tmp-*"))


def test_two_ranks_write_one_complete_manifest(tmp_path, web):
    base, _, _ = web
    urls = _write_urls(tmp_path / "urls.txt", base, [f"/scene{i}.jpg" for i in range(12)])
    out = tmp_path / "two"
    args = ["crawl-ingest", "--urls", str(urls), "--out", str(out), "--allow-private-network", "--shard-size", "2", *FAST]
    procs = [popen(*args, env={"RANK": str(r), "WORLD_SIZE": "2", "LVD_RUN_ID": "t2"}) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    m = read_manifest(out)
    assert m.complete and [s["name"] for s in m.shards] == [f"shard-{i:06d}" for i in range(6)]
    assert m.stats["status"] == {"ok": 12}
    ref = tmp_path / "one"
    lvd(*args[:4], str(ref), *args[5:])
    assert _keys_status(out) == _keys_status(ref)


def test_local_processes_equal_one_process(tmp_path, web):
    base, _, _ = web
    urls = _write_urls(tmp_path / "urls.txt", base, [f"/scene{i}.jpg" for i in range(12)] + ["/astronaut.jpg"] * 2)
    args = ["crawl-ingest", "--urls", str(urls), "--allow-private-network", "--shard-size", "3", *FAST]
    lvd(*args, "--out", str(tmp_path / "one"))
    lvd(*args, "--out", str(tmp_path / "three"), "--processes", "3")
    m = read_manifest(tmp_path / "three")
    assert m.complete and len(m.shards) == 5 and m.stats["duplicates"]["exact"] == 1
    assert _keys_status(tmp_path / "three") == _keys_status(tmp_path / "one")
    assert _tar_digests(tmp_path / "three") == _tar_digests(tmp_path / "one")
    assert not list((tmp_path / "three").glob(".finalize-*.lock"))[1:], "one launch, one finalize lock"


def test_directory_ingest_with_labels_and_inspect_grid(tmp_path, photos):
    root = tmp_path / "imagenet" / "train"
    for label, names in {"cat": ["chelsea"], "space": ["astronaut", "rocket"], "food": ["coffee"]}.items():
        (root / label).mkdir(parents=True)
        for n in names:
            photos[n].save(root / label / f"{n}.JPEG", quality=92)
    (root / "food" / "notes.txt").write_text("not an image")  # not an image extension: not a record
    out = tmp_path / "in1k"
    lvd("crawl-ingest", "--dir", str(root), "--label-from-dir", "--out", str(out))
    rows = list(_index(out).values())
    assert sorted((Path(r["source"]).stem, r["label"]) for r in rows) == [
        ("astronaut", "space"), ("chelsea", "cat"), ("coffee", "food"), ("rocket", "space")]
    assert all(r["status"] == "ok" for r in rows)
    grid = tmp_path / "grid.png"
    res = lvd("inspect", str(out), "--grid", str(grid))
    assert "ok" in res.stderr + res.stdout
    img = Image.open(grid)
    assert img.width >= 4 * 64 and img.mode == "RGB"
    # the sheet is not blank: the thumbnails carry the photos' variance
    assert max(img.convert("L").getextrema()) - min(img.convert("L").getextrema()) > 100


def test_errors_are_one_line_naming_the_culprit(tmp_path):
    res = lvd("crawl-ingest", "--urls", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"), check=False)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.txt'}: URL list not found"]
    bad = tmp_path / "list.csv"
    bad.write_text("link,caption\nhttp://x/a.jpg,hi\n")
    res = lvd("crawl-ingest", "--urls", str(bad), "--out", str(tmp_path / "o2"), check=False)
    assert res.returncode != 0 and "list.csv" in res.stderr and "url" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = lvd("crawl-ingest", "--dir", str(tmp_path), "--out", str(tmp_path / "o3"), "fetch.retries=many", check=False)
    assert res.returncode == 2 and "fetch.retries" in res.stderr and "Traceback" not in res.stderr
    res = lvd("crawl-ingest", "--dir", str(tmp_path), "--out", str(tmp_path / "o4"), "nosuchkey=1", check=False)
    assert res.returncode == 2 and "nosuchkey" in res.stderr
    res = lvd("--debug", "crawl-ingest", "--dir", str(tmp_path), "--out", str(tmp_path / "o5"), "nosuchkey=1", check=False)
    assert "Traceback" in res.stderr


def test_face_blurring_and_user_filter_hooks(tmp_path, photos):
    src = tmp_path / "src"
    src.mkdir()
    for n in ("astronaut", "coffee", "rocket"):
        photos[n].save(src / f"{n}.jpg", quality=95)
    hook = tmp_path / "myfilters.py"
    hook.write_text("def no_rockets(image, meta):\n    return 'rocket' if 'rocket' in meta['source'] else None\n")
    plain, blurred = tmp_path / "plain", tmp_path / "blurred"
    lvd("crawl-ingest", "--dir", str(src), "--out", str(plain))
    lvd("crawl-ingest", "--dir", str(src), "--out", str(blurred), "ingest.blur_faces=true", f"ingest.filters=['{hook}:no_rockets']")
    m = read_manifest(blurred)
    assert m.stats["faces_blurred"] >= 1 and m.stats["images_with_faces"] == 1
    assert m.stats["filtered"] == {"rocket": 1}
    rows = {Path(r["source"]).stem: r for r in _index(blurred).values()}
    assert rows["rocket"]["status"] == "filtered" and "no_rockets" in rows["rocket"]["error"]
    assert rows["astronaut"]["faces"] >= 1 and rows["coffee"]["faces"] == 0

    def pixels(out, stem):
        art = ImagesArtifact(out)
        key = next(r["key"] for r in art.read_index().to_pylist() if Path(r["source"]).stem == stem)
        import numpy as np

        return np.asarray(Image.open(io.BytesIO(next(s.data for s in art.iter_samples(keys={key})))).convert("L"), dtype=float)

    a0, a1 = pixels(plain, "astronaut"), pixels(blurred, "astronaut")
    # the astronaut's face (around x 180-260, y 60-160 of 512) loses its detail; the coffee cup is untouched
    face0, face1 = a0[60:160, 180:260], a1[60:160, 180:260]
    assert abs(face1 - face0).mean() > 5
    assert np.diff(face1, axis=1).std() < np.diff(face0, axis=1).std()
    assert np.array_equal(pixels(plain, "coffee"), pixels(blurred, "coffee"))
