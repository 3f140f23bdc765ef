"""Images/s per core of the pretraining data path (decode + multi-crop augmentation): lvd's with
its two CPU backends (torch tensor ops, numba kernels), lvd's before the fast path (its code read
from git), a Pillow reference with the same operations, and the part that stays on the CPU when
the colour operations run on an accelerator, side by side in one process pinned to one core and
one thread.

The Pillow reference is what the official DINOv2 code runs (torchvision's transforms on PIL
images): crop + bicubic resize, flip, ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8 in a random
order (ImageEnhance brightness / contrast / colour, hue through PIL's HSV), grayscale p=0.2,
Gaussian blur with the recipe's probabilities, solarize p=0.2 on the second global crop, then
ToTensor + Normalize per crop. Its blur is PIL's own GaussianBlur (radius = sigma); torchvision's
GaussianBlur on a PIL image would convert to a tensor and back, which is slower, so the
reference here is the faster of the two.

    python benchmarks/data_path.py                      # both recipe sizes
    python benchmarks/data_path.py --only small_data --repeats 7
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import importlib
import io
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from lvdtool.data.augment import MultiCropAugment, MultiCropConfig
from lvdtool.data.decode import decode_rgb, to_uint8_chw

OLD_COMMIT = "9e1f063"  # the last commit before the fast path
REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "dinov2": (MultiCropConfig(), None, 16),  # 2 x 224 + 8 x 98 from ~500 x 375 JPEGs, batch of 16
    "small_data": (MultiCropConfig(global_crops_size=32, local_crops_size=16, n_local_crops=4,
                                   global_crops_scale=(0.5, 1.0), local_crops_scale=(0.2, 0.5)), 64, 64),
}


def scene_jpeg(seed: int, w: int = 500, h: int = 375) -> bytes:
    """A photo-like JPEG: gradients, shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = Image.fromarray(np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(30):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = [x0, y0, x0 + int(rng.integers(10, w // 3)), y0 + int(rng.integers(10, h // 3))]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noisy = np.clip(np.asarray(img, np.float32) + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def digit_pngs(n: int) -> list[bytes]:
    """scikit-learn digits as 64-px RGB PNGs (how the small-data tests store them)."""
    from sklearn.datasets import load_digits

    digits, out = load_digits(), []
    for i in range(n):
        img = Image.fromarray((digits.images[i] / 16.0 * 255).astype(np.uint8)).resize((64, 64), Image.BICUBIC)
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def old_augment_module(commit: str):
    """lvdtool.data.augment as of `commit`, imported under another name from `git show`."""
    root = Path(tempfile.mkdtemp(prefix="lvd_old_augment_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = root / "lvd_old_augment"
    package.mkdir()
    for name in ("__init__", "collate", "color", "geometry", "multicrop", "photometric"):
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:src/lvdtool/data/augment/{name}.py"],
                              check=True, capture_output=True, text=True).stdout
        (package / f"{name}.py").write_text(text.replace("lvdtool.data.augment.", "lvd_old_augment."))
    sys.path.insert(0, str(root))
    return importlib.import_module("lvd_old_augment")


class PillowDINO:
    """torchvision-style DINOv2 multi-crop on PIL images (see the module docstring)."""

    def __init__(self, cfg: MultiCropConfig, seed: int = 0) -> None:
        self.cfg, self.rng = cfg, random.Random(seed)
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)

    def _box(self, w: int, h: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
        area, (lo, hi) = w * h, self.cfg.crop_ratio
        for _ in range(10):
            target = area * self.rng.uniform(*scale)
            aspect = math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = self.rng.randint(0, h - ch), self.rng.randint(0, w - cw)
                return left, top, left + cw, top + ch
        return 0, 0, w, h

    def _hue(self, img: Image.Image, shift: float) -> Image.Image:
        h, s, v = img.convert("HSV").split()
        np_h = np.array(h, dtype=np.uint8)
        with np.errstate(over="ignore"):
            np_h += np.uint8(int(shift * 255) % 256)  # torchvision: a wrapping uint8 add
        return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB")

    def _crop(self, img: Image.Image, size: int, scale: tuple[float, float], blur_p: float,
              sol_p: float) -> torch.Tensor:
        cfg, rng = self.cfg, self.rng
        out = img.crop(self._box(*img.size, scale)).resize((size, size), Image.BICUBIC)
        if rng.random() < cfg.flip_prob:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        j = cfg.jitter
        if rng.random() < j.prob:
            for op in rng.sample(range(4), 4):
                if op == 0:
                    out = ImageEnhance.Brightness(out).enhance(rng.uniform(1 - j.brightness, 1 + j.brightness))
                elif op == 1:
                    out = ImageEnhance.Contrast(out).enhance(rng.uniform(1 - j.contrast, 1 + j.contrast))
                elif op == 2:
                    out = ImageEnhance.Color(out).enhance(rng.uniform(1 - j.saturation, 1 + j.saturation))
                else:
                    out = self._hue(out, rng.uniform(-j.hue, j.hue))
        if rng.random() < cfg.grayscale_prob:
            out = out.convert("L").convert("RGB")
        if rng.random() < blur_p:
            out = out.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*cfg.blur_sigma)))
        if rng.random() < sol_p:
            out = ImageOps.solarize(out, 128)
        x = torch.from_numpy(np.array(out, copy=True)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return x.sub_(self.mean).div_(self.std)

    def __call__(self, img: Image.Image) -> dict[str, list[torch.Tensor]]:
        cfg = self.cfg
        b1, b2, bl = cfg.effective_blur_probs
        g, s = cfg.global_crops_size, cfg.global_crops_scale
        return {"global_crops": [self._crop(img, g, s, b1, 0.0), self._crop(img, g, s, b2, cfg.solarize_prob)],
                "local_crops": [self._crop(img, cfg.local_crops_size, cfg.local_crops_scale, bl, 0.0)
                                for _ in range(cfg.n_local_crops)]}


def geometric(aug: MultiCropAugment, image: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    params = aug.sample_params((image.shape[1], image.shape[2]), generator)
    return [aug.geometric(image, params.global_crops, aug.config.global_crops_size),
            aug.geometric(image, params.local_crops, aug.config.local_crops_size)]


def pipelines(cfg: MultiCropConfig, min_side: int | None, old) -> dict[str, Callable[[list[bytes]], object]]:
    new_aug = MultiCropAugment(cfg)
    numba_aug = MultiCropAugment(dataclasses.replace(cfg, backend="numba"))
    pil = PillowDINO(cfg)

    def gens(n: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(i) for i in range(n)]

    def decode(batch: list[bytes]) -> list[torch.Tensor]:
        return [to_uint8_chw(decode_rgb(b, min_side)) for b in batch]

    out = {
        "lvd, per image": lambda batch: [new_aug(im, g) for im, g in zip(decode(batch), gens(len(batch)))],
        "lvd, batched (loader)": lambda batch: new_aug.batch(decode(batch), gens(len(batch))),
        "lvd numba, per image": lambda batch: [numba_aug(im, g) for im, g in zip(decode(batch), gens(len(batch)))],
        "lvd numba, batched": lambda batch: numba_aug.batch(decode(batch), gens(len(batch))),
        "Pillow reference": lambda batch: [pil(decode_rgb(b, min_side)) for b in batch],
        # What stays on the CPU when the colour part runs on the accelerator (data_path_device.py):
        # decode, draws, crop + resize + flip.
        "numba, geometric only": lambda batch: [geometric(numba_aug, im, g) for im, g in
                                                zip(decode(batch), gens(len(batch)))],
    }
    if old is not None:
        old_aug = old.MultiCropAugment(old.MultiCropConfig(**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__
                                                              if k != "jitter"}))
        out["lvd before, per image"] = lambda batch: [old_aug(im, g) for im, g in zip(decode(batch), gens(len(batch)))]
        out["lvd before, batched"] = lambda batch: old_aug.batch(decode(batch), gens(len(batch)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=sorted(RECIPES), help="one recipe size instead of both")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--old-commit", default=OLD_COMMIT, help="the lvd code to time as 'before' ('' to skip)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})  # one core
    old = old_augment_module(args.old_commit) if args.old_commit else None
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"torch {torch.__version__}, Pillow {Image.__version__}, commit {commit}, 1 thread on 1 core, "
          f"median of {args.repeats} (pipelines interleaved)")
    for name, (cfg, min_side, n) in RECIPES.items():
        if args.only and name != args.only:
            continue
        data = [scene_jpeg(i) for i in range(n)] if name == "dinov2" else digit_pngs(n)
        fns = pipelines(cfg, min_side, old)
        for fn in fns.values():
            fn(data[:2])  # warm-up
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for key, fn in fns.items():
                started = time.perf_counter()
                fn(data)
                times[key].append(time.perf_counter() - started)
        rate = {k: n / float(np.median(v)) for k, v in times.items()}
        shape = f"2 x {cfg.global_crops_size} + {cfg.n_local_crops} x {cfg.local_crops_size}"
        print(f"\n{name}: {shape} crops, {n} images per timed batch")
        print(f"{'pipeline':24s} {'images/s/core':>14s} {'ms/image':>9s} {'vs Pillow':>10s}")
        for key, r in rate.items():
            print(f"{key:24s} {r:14.1f} {1e3 / r:9.2f} {r / rate['Pillow reference']:9.2f}x")
        best = max(rate["lvd, per image"], rate["lvd, batched (loader)"])
        fast = max(rate["lvd numba, per image"], rate["lvd numba, batched"])
        print(f"lvd torch backend (best path) / Pillow: {best / rate['Pillow reference']:.2f}x; "
              f"numba backend / Pillow: {fast / rate['Pillow reference']:.2f}x (target 2x); "
              f"numba / torch: {fast / best:.2f}x", end="")
        if old is not None:
            before = max(rate["lvd before, per image"], rate["lvd before, batched"])
            print(f"; lvd now / before: {best / before:.2f}x")
        else:
            print()


if __name__ == "__main__":
    main()
