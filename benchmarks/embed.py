"""Benchmark `lvd embed` against the same model's bare forward on pre-decoded tensors.

The ratio (lvd embed images/s) / (bare forward images/s) is what the data path (tar read, JPEG
decode, resize, crop, host-to-device copy, fp16 output, Parquet write) costs. Builds a random-init
backbone of each arch (the weights do not change the speed) and an images artifact of N photos.

    python benchmarks/embed.py --archs vit_s14 --n 128 --batch 32            # CPU
    python benchmarks/embed.py --archs vit_s14 vit_l14 vit_g14 --n 8192 --batch 256 --workers 12   # GPU
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lvdtool.models import build_backbone, save_backbone


def make_images(root: Path, n: int) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from ingest import make_images as make_jpegs

    src = root / "src"
    src.mkdir()
    make_jpegs(src, n)
    out = root / "images"
    subprocess.run([str(Path(sys.executable).with_name("lvd")), "crawl-ingest", "--dir", str(src), "--out", str(out),
                    "--shard-size", "1024", "dedup.perceptual=false", "dedup.exact=false"],
                   check=True, env={**os.environ, "LVD_QUIET": "1"}, stdout=subprocess.DEVNULL)
    return out


def bare_forward(model, batch: int, n: int, device, bf16: bool) -> float:
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
    from lvdtool.data.eval_transform import normalize_batch

    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model(normalize_batch(x.to(device)))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(max(1, n // batch)):
            model(normalize_batch(x.to(device, non_blocking=True)))["x_norm_clstoken"].float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return max(1, n // batch) * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", nargs="+", default=["vit_s14"])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from lvdtool.stages import embed as stage

    os.environ["LVD_QUIET"] = "1"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device.type == "cuda"
    work = Path(tempfile.mkdtemp(prefix="lvd-bench-embed-"))
    rows = []
    try:
        images = make_images(work, args.n)
        for arch in args.archs:
            torch.manual_seed(0)
            model = build_backbone(arch).eval()
            weights = work / f"{arch}.pth"
            save_backbone(model, weights)
            bare = bare_forward(model.to(device), args.batch, args.n, device, bf16)
            out = work / f"emb-{arch}"
            t0 = time.perf_counter()
            stage.main([f"images={images}", f"out={out}", f"weights={weights}", f"batch_size={args.batch}",
                        f"workers={args.workers}"])
            lvd = args.n / (time.perf_counter() - t0)
            rows.append((arch, bare, lvd))
            del model
    finally:
        shutil.rmtree(work, ignore_errors=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"\n{name}, torch {torch.__version__}, {args.n} images at 224, batch {args.batch}, {args.workers} workers, "
          f"{'bf16' if bf16 else 'fp32'}")
    print(f"{'arch':10s} {'bare fwd img/s':>15s} {'lvd embed img/s':>16s} {'ratio':>6s} {'data path cost':>15s}")
    for arch, bare, lvd in rows:
        print(f"{arch:10s} {bare:15.1f} {lvd:16.1f} {lvd / bare:6.2f} {100 * (1 - lvd / bare):14.0f}%")


if __name__ == "__main__":
    main()
