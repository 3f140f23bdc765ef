"""Fixtures of the training tests: a tiny real-image `images` artifact made by `lvd crawl-ingest`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

LVD = str(Path(sys.executable).with_name("lvd"))


def write_digit_folders(root: Path, count: int, size: int) -> None:
    """The first `count` scikit-learn digits, upsampled to size x size RGB PNGs, one folder per label."""
    digits = load_digits()
    for i in range(count):
        pixels = (digits.images[i] / 16.0 * 255).astype(np.uint8)
        image = Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
        folder = root / str(int(digits.target[i]))
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"digit{i:04d}.png")


def crawl_ingest(source: Path, out: Path, shard_size: int) -> Path:
    # Digits are near-duplicates of each other by design: keep them all.
    args = [LVD, "crawl-ingest", "--dir", str(source), "--label-from-dir", "--out", str(out),
            "--shard-size", str(shard_size), "process.min_side=16", "dedup.perceptual=false", "dedup.exact=false"]
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "LVD_QUIET": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def digits_images(tmp_path_factory) -> Path:
    """60 digits at 32 px in 3 shards of 20."""
    root = tmp_path_factory.mktemp("digits")
    write_digit_folders(root / "src", 60, 32)
    return crawl_ingest(root / "src", root / "images", shard_size=20)
