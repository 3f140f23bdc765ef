"""Benchmark `lvd crawl-ingest`: images/s over a loopback HTTP server serving real photos.

Serves N JPEGs (crops and rescales of scikit-image / scikit-learn sample photos, 0.3-1 MP each)
from a separate server process on 127.0.0.1, runs `lvd crawl-ingest` on the URL list, and, when
an img2dataset executable is given (installed in its own venv), runs it on the same list in the
same session and prints the ratio.

    python benchmarks/ingest.py --n 2000 [--img2dataset /tmp/i2d/bin/img2dataset] [--threads 32] [--processes 2]
    python benchmarks/ingest.py --n 1000 --shard-size 1000 --processes 1 --repeats 5 \
        --img2dataset /tmp/i2d/bin/img2dataset --set process.resample=area

With --repeats R the two tools run in turn R times (fresh outputs each time) and the ratio is the
median of the pairs' ratios; --set passes config overrides to lvd crawl-ingest.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, n: int) -> list[str]:
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    sources = [np.asarray(getattr(skdata, k)()) for k in ("astronaut", "coffee", "chelsea", "rocket")]
    sources += list(load_sample_images().images)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        src = Image.fromarray(sources[i % len(sources)]).convert("RGB")
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        s = rng.uniform(1.0, 1.8)
        img = src.crop((x, y, x + cw, y + ch)).resize((int(cw * s), int(ch * s)), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        (root / f"img{i:06d}.jpg").write_bytes(buf.getvalue())
        names.append(f"img{i:06d}.jpg")
    return names


def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def timed(cmd: list[str], env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=None, help="records per shard for both tools (default n / (4 x processes))")
    ap.add_argument("--processes", type=int, default=2, help="lvd local processes and img2dataset processes_count")
    ap.add_argument("--img2dataset", default=None, help="path to an img2dataset executable (own venv)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each tool, alternating; the ratio is the median pair's")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a crawl-ingest config override")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lvd-bench-ingest-"))
    web = work / "web"
    web.mkdir()
    names = make_images(web, args.n)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(web)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        urls = work / "urls.txt"
        urls.write_text("".join(f"http://127.0.0.1:{port}/{n}\n" for n in names))
        lvd = str(Path(sys.executable).with_name("lvd"))
        env = {**os.environ, "LVD_QUIET": "1"}
        rows = []
        shard = args.shard_size or max(1, args.n // (4 * args.processes))  # several shards per process
        ratios: dict[int, list[float]] = {}
        for procs in sorted({1, args.processes}):
            for r in range(args.repeats):
                t = timed([lvd, "crawl-ingest", "--urls", str(urls), "--out", str(work / f"lvd{procs}-{r}"),
                           "--allow-private-network", "--threads", str(args.threads), "--shard-size", str(shard),
                           "--processes", str(procs), *args.set], env)
                rows.append((f"lvd crawl-ingest, {procs} process(es)", t))
                if args.img2dataset:
                    t_i2d = timed([args.img2dataset, "--url_list", str(urls), "--output_folder",
                                   str(work / f"i2d{procs}-{r}"), "--output_format", "webdataset", "--input_format",
                                   "txt", "--image_size", "512", "--resize_mode", "keep_ratio",
                                   "--resize_only_if_bigger", "True", "--processes_count", str(procs),
                                   "--thread_count", str(args.threads), "--encode_quality", "95",
                                   "--number_sample_per_shard", str(shard)])
                    rows.append((f"img2dataset, {procs} process(es)", t_i2d))
                    ratios.setdefault(procs, []).append(t_i2d / t)
                for out in (work / f"lvd{procs}-{r}", work / f"i2d{procs}-{r}"):
                    shutil.rmtree(out, ignore_errors=True)
        print(f"\n{args.n} images, {os.cpu_count()} cores, threads={args.threads}, shard size {shard}, "
              f"lvd overrides {args.set or 'none'}")
        print(f"{'tool':48s} {'seconds':>8s} {'images/s':>9s}")
        for name, t in rows:
            print(f"{name:48s} {t:8.1f} {args.n / t:9.1f}")
        for procs, values in ratios.items():
            print(f"ratio lvd / img2dataset images/s ({procs} process(es)): median {float(np.median(values)):.2f} "
                  f"over {len(values)} pairs (min {min(values):.2f}, max {max(values):.2f})")
    finally:
        server.terminate()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
