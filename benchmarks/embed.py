"""Benchmark `lvd embed` against the same model's bare forward on pre-decoded tensors.

The ratio (lvd embed images/s) / (bare forward images/s) is what the data path (tar read, JPEG
decode, resize, crop, host-to-device copy, fp16 output, Parquet write) costs. The backbone is the
stage's own random init (`random_init=true`: the weights do not change the speed); the images
artifact is `lvd crawl-ingest --keep-original` of `--distinct` generated 500 x 375 JPEGs, each
linked under several names up to N (JPEG shards, as a crawl writes them).

Two embed figures: end to end (N over the stage's whole wall time, model build and worker start
included) and steady (the extra images of the full run over its extra seconds against a run on
its first shards alone, one per worker, so the start-up cancels out).

    python benchmarks/embed.py --archs vit_s14 --n 128 --batch 32            # CPU
    python benchmarks/embed.py --archs vit_l14 --n 16384 --batch 256 --workers 12 --device cuda \\
        --json embed.json --markdown embed.md --deadline-s 90                # GPU
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_path import scene_jpeg  # noqa: E402
from report import Deadline, Table, commit  # noqa: E402

from lvdtool.errors import LvdError  # noqa: E402
from lvdtool.models import build_backbone  # noqa: E402

COLUMNS = ["arch", "images", "batch", "workers", "precision", "bare_forward_images_per_s",
           "embed_end_to_end_images_per_s", "embed_steady_images_per_s", "data_path_cost", "device", "error"]


def make_images(root: Path, n: int, distinct: int, shard_size: int, processes: int) -> Path:
    src = root / "src"
    src.mkdir()
    jpegs = [src / f"img{i:07d}.jpg" for i in range(n)]
    for i, path in enumerate(jpegs[:distinct]):
        path.write_bytes(scene_jpeg(i))
    for i, path in enumerate(jpegs[distinct:], start=distinct):
        os.link(jpegs[i % distinct], path)  # same bytes, another record (dedup is off)
    out = root / "images"
    lvd = [sys.executable, "-c", "from lvdtool.cli import main; main()"]  # `lvd`, with or without its script installed
    subprocess.run([*lvd, "crawl-ingest", "--dir", str(src), "--out", str(out),
                    "--shard-size", str(shard_size), "--processes", str(processes), "--keep-original",
                    "dedup.perceptual=false", "dedup.exact=false"],
                   check=True, env={**os.environ, "LVD_QUIET": "1"}, stdout=subprocess.DEVNULL)
    return out


def first_shards(images: Path, root: Path, count: int) -> tuple[Path, int]:
    """A second images artifact holding the first `count` shards of `images` (their files linked):
    as many as the stage's workers, so both runs read with all workers."""
    import json

    manifest = json.loads((images / "manifest.json").read_text())
    first = manifest["shards"][:count]
    small = root / "images-first-shards"
    (small / "shards").mkdir(parents=True)
    for shard in first:
        for path in (images / "shards").glob(f"{shard['name']}.*"):
            os.link(path, small / "shards" / path.name)
    manifest["shards"] = first
    (small / "manifest.json").write_text(json.dumps(manifest))
    return small, sum(int(s["rows"]) for s in first)


def bare_forward(model, batch: int, n: int, device, bf16: bool) -> float:
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8)
    from lvdtool.data.eval_transform import normalize_batch

    if device.type == "cuda":
        x = x.pin_memory()
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


def embed_seconds(images: Path, out: Path, arch: str, args: argparse.Namespace) -> float:
    from lvdtool.stages import embed as stage

    t0 = time.perf_counter()
    stage.main([f"images={images}", f"out={out}", f"arch={arch}", "random_init=true", f"batch_size={args.batch}",
                f"workers={args.workers}", f"device={args.device}"])
    return time.perf_counter() - t0


def bench(arch: str, images: Path, small: Path, small_n: int, work: Path, args, device, bf16: bool) -> dict:
    torch.manual_seed(0)
    model = build_backbone(arch).eval().to(device)
    bare = bare_forward(model, args.batch, min(args.n, args.bare_n), device, bf16)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    whole = embed_seconds(images, work / f"emb-{arch}", arch, args)
    steady = None
    if small_n < args.n:
        part = embed_seconds(small, work / f"emb-{arch}-first", arch, args)
        steady = (args.n - small_n) / (whole - part) if whole > part else None
    lvd = args.n / whole
    best = steady or lvd
    return {"arch": arch, "images": args.n, "batch": args.batch, "workers": args.workers,
            "precision": "bf16" if bf16 else "fp32", "bare_forward_images_per_s": bare,
            "embed_end_to_end_images_per_s": lvd, "embed_steady_images_per_s": steady,
            "data_path_cost": f"{100 * (1 - best / bare):.0f}%", "device": str(device), "error": ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["vit_s14"])
    ap.add_argument("--n", type=int, default=128, help="images in the artifact")
    ap.add_argument("--distinct", type=int, default=256, help="distinct JPEGs generated (linked up to --n)")
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--processes", type=int, default=1, help="crawl-ingest processes building the artifact")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bare-n", type=int, default=4096, help="images of the bare forward timing (at most --n)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--deadline-s", type=float, help="seconds for the whole run; later archs are skipped")
    ap.add_argument("--json", help="write the table as JSON here (after each arch)")
    ap.add_argument("--markdown", help="write the table as markdown here (after each arch)")
    args = ap.parse_args()

    os.environ["LVD_QUIET"] = "1"
    deadline = Deadline(args.deadline_s)
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    bf16 = device.type == "cuda"
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    table = Table("lvd embed vs bare forward", COLUMNS, args.json, args.markdown,
                  {"commit": commit(), "torch": torch.__version__, "device": label, "resolution": 224,
                   "images": f"{args.n} JPEG records ({args.distinct} distinct 500 x 375), shards of {args.shard_size}"})
    work = Path(tempfile.mkdtemp(prefix="lvd-bench-embed-"))
    try:
        t0 = time.perf_counter()
        images = make_images(work, args.n, min(args.distinct, args.n), args.shard_size, args.processes)
        small, small_n = first_shards(images, work, max(1, args.workers))
        table.note("artifact build s", round(time.perf_counter() - t0, 1))
        for arch in args.archs:
            if deadline.passed():
                table.add(arch=arch, images=args.n, error=f"deadline {args.deadline_s} s reached")
                continue
            try:
                table.add(**bench(arch, images, small, small_n, work, args, device, bf16))
            except (torch.OutOfMemoryError, RuntimeError, LvdError) as error:  # the next arch still runs
                table.add(arch=arch, images=args.n, error=f"{type(error).__name__}: {str(error).splitlines()[0]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table.print()


if __name__ == "__main__":
    main()
