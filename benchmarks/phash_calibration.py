"""Calibrate crawl-ingest's perceptual dedup: false positives on distinct real images, true positives on copies.

    python benchmarks/phash_calibration.py [--mnist /work/data/mnist32_resize/train] [--max-distance 8]

False-positive rate at Hamming distance d: the share of a set of *distinct* images that ingest's own
greedy rule (lvdtool.ingest.bucket_dedup: first occurrence kept, a later image within d bits of a
kept one is a duplicate) marks as duplicates. Sets: MNIST digits (a folder of PNGs), scikit-learn's
load_digits upscaled, and photos (scikit-image and scikit-learn sample photos) tiled into
non-overlapping crops. True-positive rate: the share of planted copies of whole photos (JPEG
re-encode, resize, border crop, brightness) within d bits of their original.
"""
from __future__ import annotations

import argparse
import io
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from lvdtool.ingest import phash64
from lvdtool.ingest.bucket_dedup import greedy_result, resolve_bands

PHOTO_NAMES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
               "immunohistochemistry", "moon", "retina", "rocket", "clock")
TILE = 64


def _hashes(images) -> np.ndarray:
    return np.array([phash64(im) for im in images], np.uint64)


def greedy_fp_rate(hashes: np.ndarray, max_distance: int) -> float:
    """The share of images marked duplicates by the ingest rule, in the given order."""
    keys = np.arange(len(hashes), dtype=np.int64)
    bands = np.repeat(np.arange(max_distance + 1, dtype=np.uint8), len(hashes))
    a, b, d = resolve_bands(bands, np.tile(hashes, max_distance + 1), np.tile(keys, max_distance + 1), max_distance)
    empty = np.zeros(0, np.int64)
    return len(greedy_result(empty, empty, a, b, d)) / len(hashes)


def mnist_images(root: Path) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(root.glob("*/*.png"))]


def sklearn_digits() -> list[Image.Image]:
    from sklearn.datasets import load_digits

    data = (load_digits().images * (255 / 16)).astype(np.uint8)
    return [Image.fromarray(d).resize((64, 64), Image.Resampling.BICUBIC).convert("RGB") for d in data]


def photos() -> dict[str, Image.Image]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {n: Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in PHOTO_NAMES}
    sample = load_sample_images()
    out.update({Path(f).stem: Image.fromarray(im) for f, im in zip(sample.filenames, sample.images)})
    return out


def photo_tiles(images: dict[str, Image.Image], min_std: float = 0.0) -> list[Image.Image]:
    """Non-overlapping TILE x TILE crops; min_std > 0 leaves out flat ones (black sky: pixel-identical tiles)."""
    tiles = []
    for im in images.values():
        for top in range(0, im.height - TILE + 1, TILE):
            for left in range(0, im.width - TILE + 1, TILE):
                tile = im.crop((left, top, left + TILE, top + TILE))
                if np.asarray(tile.convert("L"), float).std() >= min_std:
                    tiles.append(tile)
    return tiles


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(im: Image.Image, share: float) -> Image.Image:
    dx, dy = int(im.width * share / 2), int(im.height * share / 2)
    return im.crop((dx, dy, im.width - dx, im.height - dy))


COPIES = {
    "jpeg": [lambda im, q=q: _jpeg(im, q) for q in (50, 70, 90)],
    "resize": [lambda im, s=s: im.resize((int(im.width * s), int(im.height * s)), Image.Resampling.BICUBIC) for s in (0.5, 0.7, 0.9)],
    "crop": [lambda im, s=s: _crop(im, s) for s in (0.05, 0.10)],
    "bright": [lambda im, f=f: ImageEnhance.Brightness(im).enhance(f) for f in (0.9, 0.95, 1.05, 1.1)],
}


def copy_distances(images: dict[str, Image.Image]) -> dict[str, np.ndarray]:
    out = {}
    originals = {n: phash64(im) for n, im in images.items()}
    for kind, transforms in COPIES.items():
        out[kind] = np.array([(originals[n] ^ phash64(t(im))).bit_count() for n, im in images.items() for t in transforms])
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=Path("/work/data/mnist32_resize/train"))
    parser.add_argument("--max-distance", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    pics = photos()
    sets = {}
    if args.mnist.is_dir():
        sets["MNIST"] = _hashes(mnist_images(args.mnist))
    sets["load_digits"] = _hashes(sklearn_digits())
    sets["photo tiles"] = _hashes(photo_tiles(pics))
    sets["textured tiles"] = _hashes(photo_tiles(pics, min_std=3.0))
    copies = copy_distances(pics)
    print(f"# phash calibration, {time.strftime('%Y-%m-%d')}, commit {_git_commit()}, {platform.machine()} "
          f"{platform.processor() or ''} python {platform.python_version()}")
    print("# distinct sets: " + ", ".join(f"{k} n={len(v)}" for k, v in sets.items())
          + f"; copies of {len(pics)} photos: " + ", ".join(f"{k} n={len(v)}" for k, v in copies.items()))
    head = ["d"] + [f"FP {k}" for k in sets] + [f"TP {k}" for k in copies] + ["TP all"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    every = np.concatenate(list(copies.values()))
    for d in range(args.max_distance + 1):
        fp = [f"{100 * greedy_fp_rate(h, d):.2f}%" for h in sets.values()]
        tp = [f"{100 * np.mean(v <= d):.0f}%" for v in copies.values()] + [f"{100 * np.mean(every <= d):.0f}%"]
        print("| " + " | ".join([str(d)] + fp + tp) + " |")
    print(f"# {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
