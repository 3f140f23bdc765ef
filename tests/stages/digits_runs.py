"""Shared by the pretraining tests: the digits images artifact and running the pretrain stage in a
fresh process (as `lvd pretrain` runs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from sklearn.datasets import load_digits

from lvd_runner import lvd
from lvdtool.artifacts import ImagesArtifact, Manifest

BIN = Path(sys.executable).parent


def make_digits(root: Path) -> dict[str, Path]:
    """All 1797 scikit-learn digits at 32 px as an images artifact under `root`, and a selection of 4/5 of them."""
    data = load_digits()
    for i, (pixels, label) in enumerate(zip(data.images, data.target)):
        image = Image.fromarray((pixels / 16 * 255).astype(np.uint8), "L").resize((32, 32), Image.Resampling.BICUBIC)
        (root / "src" / str(label)).mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(root / "src" / str(label) / f"d{i:04d}.png")
    images = root / "images"
    # digits are near-duplicates of each other by nature: keep them all
    lvd("crawl-ingest", "--dir", str(root / "src"), "--label-from-dir", "--out", str(images), "--shard-size", "500",
        "process.min_side=16", "dedup.perceptual=false", "dedup.exact=false")
    keys = sorted(ImagesArtifact(images).read_index(columns=["key"]).column("key").to_pylist())
    train = [k for i, k in enumerate(keys) if i % 5]
    selection = root / "train_selection"
    (selection / "shards").mkdir(parents=True)
    pq.write_table(pa.table({"key": train}), selection / "shards" / "selection-000000.parquet")
    Manifest(kind="selection", stage="test", config={}, shards=[{"name": "selection-000000", "rows": len(train)}],
             complete=True).write(selection)
    return {"images": images, "selection": selection}


def env() -> dict[str, str]:
    return {**os.environ, "LVD_QUIET": "1", "OMP_NUM_THREADS": "1"}


def run_stage(args: list[str], nproc: int = 1, timeout: float = 180, threads: int = 1) -> subprocess.CompletedProcess:
    launcher = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    proc = subprocess.run([*launcher, "-m", "lvdtool.stages.pretrain", *args], capture_output=True, text=True,
                          env={**env(), "OMP_NUM_THREADS": str(threads)}, timeout=timeout)
    assert proc.returncode == 0, f"pretrain failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
