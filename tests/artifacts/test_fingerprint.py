"""File fingerprints are the full sha256 (what `sha256sum` prints), and manifests written with the
older 32-hex prefixes still resume."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lvdtool.artifacts.fingerprint import comparable_fingerprint, file_fingerprint
from lvdtool.artifacts.manifest import read_manifest


def lvd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real `lvd` console script of this environment, as a user runs it."""
    proc = subprocess.run([str(Path(sys.executable).with_name("lvd")), *args], capture_output=True, text=True,
                          env={**os.environ, "LVD_QUIET": "1"}, timeout=300)
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def test_a_file_fingerprint_is_what_sha256sum_prints(tmp_path: Path) -> None:
    f = tmp_path / "urls.txt"
    f.write_bytes(b"http://example.com/a.jpg\n" * 1000)
    printed = subprocess.run(["sha256sum", str(f)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert file_fingerprint(f) == f"sha256:{printed}" and len(printed) == 64


def test_comparable_fingerprints_match_every_length_lvd_wrote() -> None:
    full = "sha256:" + hashlib.sha256(b"x").hexdigest()
    for older in (full[: 7 + 32], full[: 7 + 16], full.upper().replace("SHA256:", "sha256:")):
        assert comparable_fingerprint(older) == comparable_fingerprint(full)
    other = "sha256:" + hashlib.sha256(b"y").hexdigest()
    assert comparable_fingerprint(other) != comparable_fingerprint(full)
    # hashes of shard lists and folders are not file hashes: compared whole
    assert comparable_fingerprint("shards:" + "a" * 32) == "shards:" + "a" * 32
    assert comparable_fingerprint("tree:" + "b" * 32) != comparable_fingerprint("tree:" + "b" * 16)


@pytest.fixture()
def served_urls(tmp_path: Path):
    """Three JPEGs on a loopback HTTP server and the URL list naming them."""
    web = tmp_path / "web"
    web.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(web / f"img{i}.jpg", quality=90)
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(web))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"http://127.0.0.1:{server.server_address[1]}/img{i}.jpg\n" for i in range(3)))
    yield urls
    server.shutdown()


def test_an_ingest_recorded_with_a_32_hex_prefix_resumes(tmp_path: Path, served_urls: Path) -> None:
    out = tmp_path / "raw"
    args = ("crawl-ingest", "--urls", str(served_urls), "--out", str(out), "--allow-private-network")
    lvd(*args)
    manifest = json.loads((out / "manifest.json").read_text())
    printed = subprocess.run(["sha256sum", str(served_urls)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert manifest["inputs"][0]["fingerprint"] == f"sha256:{printed}"
    # what an lvd before full fingerprints wrote for the same URL list
    manifest["inputs"][0]["fingerprint"] = f"sha256:{printed[:32]}"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    tar = out / "shards" / "shard-000000.tar"
    before = tar.stat().st_mtime_ns
    lvd(*args)  # resumes: nothing to redo
    assert tar.stat().st_mtime_ns == before and read_manifest(out).complete
    # the comparison is still made: another URL list into the same output is refused by name
    served_urls.write_text(served_urls.read_text() + served_urls.read_text().splitlines()[0] + "?v=2\n")
    proc = lvd(*args, check=False)
    assert proc.returncode != 0 and "differs at: inputs" in proc.stderr and "Traceback" not in proc.stderr
