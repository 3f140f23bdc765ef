"""The snippets of docs/artifacts.md marked `<!-- tested -->` run, without lvd, on small real artifacts.

Made by real `lvd crawl-ingest`, `embed` (the demo's thumbnail TorchScript descriptor, the cheapest model)
and `dedup`; the backbone file is written by `save_backbone`, what a training run exports. Each snippet's
printed line is compared with what the manifests say. The metrics.jsonl and probe report snippets are not
run here (they need a training run or a probe).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from lvd_runner import lvd
from lvdtool.models import build_backbone, save_backbone

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "artifacts.md"
SNIPPET = re.compile(r"<!-- tested -->\n```python\n(.*?)```", re.S)


def snippets() -> list[str]:
    return SNIPPET.findall(DOC.read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """data/raw, data/emb, data/dedup and runs/pretrain/backbone.pth, as the docs' snippets name them."""
    cwd = tmp_path_factory.mktemp("docs")
    photos = cwd / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        base = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((160, 120), Image.Resampling.BICUBIC)
        img.save(photos / f"scene{i}.jpg", quality=90)
        if i < 3:  # a slightly brightened crop: a near-duplicate for dedup
            copy = ImageEnhance.Brightness(img.crop((3, 2, 160, 120))).enhance(1.05)
            copy.save(photos / f"scene{i}_copy.jpg", quality=85)
    (photos / "notes.jpg").write_bytes(b"not an image")
    lvd("crawl-ingest", "--dir", str(photos), "--out", str(cwd / "data/raw"), "--shard-size", "8")
    subprocess.run([sys.executable, str(ROOT / "stages/demo_descriptor.py"), str(cwd / "thumb.pt")], check=True)
    lvd("embed", "--images", str(cwd / "data/raw"), "--out", str(cwd / "data/emb"), "model.kind=torchscript",
        f"model.path={cwd / 'thumb.pt'}", "preprocess=sscd", "workers=0")
    lvd("dedup", "--embeddings", str(cwd / "data/emb"), "--out", str(cwd / "data/dedup"), "--threshold", "0.93",
        "--k", "8", "calibration.pairs=0")
    torch.manual_seed(0)
    save_backbone(build_backbone("vit_test"), cwd / "runs/pretrain/backbone.pth")
    return cwd


def _run(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"snippet failed:\n{code}\n{proc.stderr}"
    return proc.stdout.strip()


def test_every_tested_snippet_prints_what_the_artifacts_hold(work: Path) -> None:
    codes = snippets()
    assert len(codes) == 8, "the expectations below follow the doc's tested snippets in order"
    raw = json.loads((work / "data/raw/manifest.json").read_text())
    emb = json.loads((work / "data/emb/manifest.json").read_text())
    dedup = json.loads((work / "data/dedup/manifest.json").read_text())
    rows = sum(s["rows"] for s in raw["shards"])
    ok = raw["stats"]["status"]["ok"]
    dim, vectors = emb["extra"]["dim"], emb["stats"]["embedded"]
    assert (rows, ok, vectors, dim) == (14, 13, 13, 192) and dedup["stats"]["kept"] == 10  # 3 copies removed
    statuses = sorted(raw["stats"]["status"].items())
    state = torch.load(work / "runs/pretrain/backbone.pth", weights_only=True)
    heads = json.loads((work / "runs/pretrain/backbone.pth.json").read_text())["num_heads"]
    expected = [
        "True\nTrue",
        f"{rows} {ok} True",
        str([(status, n) for status, n in statuses]),
        f"({vectors}, {dim}) {vectors} True",
        f"({vectors}, {dim}) True",
        "True True",
        str(dedup["stats"]["kept"]),
        f"{state['cls_token'].shape[-1]} {state['pos_embed'].shape[1] - 1} {heads}",
    ]
    for code, want in zip(codes, expected):
        assert _run(code, work) == want, code


def test_the_doc_describes_every_artifact_kind_and_fingerprint_form() -> None:
    text = DOC.read_text()
    for heading in ("## `images`", "## `embeddings`", "## `selection`", "## `checkpoint`", "## `report`"):
        assert heading in text
    for form in ("`sha256:` + 64 hex", "`tree:` + 32 hex", "`shards:` + 32 hex"):
        assert form in text
