"""Make the demo's inputs offline: real photos bundled with scikit-image and scikit-learn, synthetic
scenes, planted near-duplicates, a few broken files, and a small labelled set (scikit-learn digits).

Usage: python stages/demo_data.py OUT_DIR
Writes OUT_DIR/web/ (files to serve over loopback HTTP), OUT_DIR/labeled/{train,val}/<class>/.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

SKIMAGE_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "hubble_deep_field",
                  "retina", "motorcycle_left", "coins", "camera", "page", "text", "moon", "horse", "brick", "grass",
                  "gravel", "clock"]


def real_photos() -> list[tuple[str, Image.Image]]:
    photos = []
    try:
        from skimage import data as skdata

        for name in SKIMAGE_PHOTOS:
            fn = getattr(skdata, name, None)
            if fn is None:
                continue
            try:
                arr = fn()
            except Exception:  # some need pooch downloads; skip those offline
                continue
            if arr.dtype == bool:
                arr = arr.astype(np.uint8) * 255
            if arr.ndim == 3 and arr.shape[2] == 4:
                arr = arr[..., :3]
            photos.append((name, Image.fromarray(np.asarray(arr, dtype=np.uint8)).convert("RGB")))
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        for i, arr in enumerate(load_sample_images().images):
            photos.append((f"sklearn{i}", Image.fromarray(arr)))
    except ImportError:
        pass
    return photos


def synthetic_scene(rng: np.random.Generator, size=(320, 240)) -> Image.Image:
    w, h = size
    bg = tuple(int(c) for c in rng.integers(0, 255, 3))
    img = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    web = out / "web"
    web.mkdir(parents=True, exist_ok=True)
    names = []
    for name, img in real_photos():
        (web / f"{name}.jpg").write_bytes(jpeg(img))
        names.append(f"{name}.jpg")
        # planted near-duplicates: re-encoded + resized, and slightly cropped + brightened
        small = img.resize((max(64, img.width * 3 // 4), max(64, img.height * 3 // 4)))
        (web / f"{name}_dup_small.jpg").write_bytes(jpeg(small, 75))
        names.append(f"{name}_dup_small.jpg")
        crop = ImageEnhance.Brightness(img.crop((img.width // 50, img.height // 50, img.width, img.height))).enhance(1.05)
        (web / f"{name}_dup_crop.jpg").write_bytes(jpeg(crop, 85))
        names.append(f"{name}_dup_crop.jpg")
    for i in range(60):
        (web / f"scene{i:03d}.jpg").write_bytes(jpeg(synthetic_scene(rng)))
        names.append(f"scene{i:03d}.jpg")
    (web / "notes.txt").write_text("this is not an image\n")
    (web / "broken.jpg").write_bytes(jpeg(synthetic_scene(rng))[:700])
    (web / "tiny.png").write_bytes(b"")
    Image.new("RGB", (16, 16), (255, 0, 0)).save(web / "tiny.png")
    names += ["notes.txt", "broken.jpg", "tiny.png", "missing.jpg"]
    (out / "files.txt").write_text("\n".join(names) + "\n")

    # A small seed set for curate: other crops of four of the photos (a stand-in for ImageNet).
    seed_dir = out / "seed"
    seed_dir.mkdir(exist_ok=True)
    photos = dict(real_photos())
    for name in [n for n in ("astronaut", "coffee", "chelsea", "rocket") if n in photos]:
        img = photos[name]
        for j in range(4):
            box = (img.width * j // 16, img.height * j // 16, img.width - img.width * (3 - j) // 16, img.height)
            img.crop(box).save(seed_dir / f"{name}_{j}.jpg", quality=90)

    labeled = out / "labeled"
    try:
        from sklearn.datasets import load_digits

        digits = load_digits()
        for split, (lo, hi) in {"train": (0, 1000), "val": (1000, 1400)}.items():
            for i in range(lo, hi):
                label = int(digits.target[i])
                arr = (digits.images[i] * (255 / 16)).astype(np.uint8)
                img = Image.fromarray(arr).resize((64, 64), Image.Resampling.BICUBIC).convert("RGB")
                d = labeled / split / f"digit{label}"
                d.mkdir(parents=True, exist_ok=True)
                img.save(d / f"{i:05d}.png")
    except ImportError:
        pass
    print(f"demo data in {out}: {len(names)} web files")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
