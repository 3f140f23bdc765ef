"""`lvd probe` on tiny labelled images artifacts (scikit-learn digits) made by crawl-ingest."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lvd_runner import lvd
from lvdtool.artifacts import read_manifest
from lvdtool.models import build_backbone, save_backbone


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for split, rng in {"train": range(0, 300), "val": range(300, 450)}.items():
        for i in rng:
            img = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.BICUBIC)
            folder = root / split / f"d{d.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(folder / f"{i}.png")
    arts = {}
    for split in ("train", "val"):
        arts[split] = root / f"{split}_art"
        lvd("crawl-ingest", "--dir", str(root / split), "--label-from-dir", "--out", str(arts[split]),
            "process.min_side=16", "dedup.perceptual=false")
    torch.manual_seed(0)
    weights = root / "backbone.pth"
    save_backbone(build_backbone("vit_s14", embed_dim=192, depth=4, num_heads=3, layerscale_init=1.0), weights)
    return arts, weights


def test_probe_reports_knn_and_linear(tmp_path, digits):
    arts, weights = digits
    out = tmp_path / "report"
    lvd("probe", "--weights", str(weights), "--train", str(arts["train"]), "--val", str(arts["val"]), "--out", str(out),
        "resolution=56", "linear.epochs=30", "linear.lrs=[0.001,0.01,0.1]", "workers=0")
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == {"train_images": 300, "val_images": 150, "classes": 10, "val_unseen_labels_left_out": 0}
    assert set(report["knn"]) == {"10", "20", "100", "200"}
    # random-init ViT features (LayerScale 1.0, as the hub builders) separate digits far above chance (10%)
    assert report["knn"]["10"]["top1"] > 25
    assert report["linear"]["protocol"]["name"] == "cached-features"
    assert len(report["linear"]["grid"]) == 4 * 3 and report["linear"]["best"]["top1"] > 25
    assert {r["features"] for r in report["linear"]["grid"]} == {"cls1", "cls1_avgpool", "cls4", "cls4_avgpool"}
    md = (out / "report.md").read_text()
    assert "Weighted k-NN" in md and "cached-features" in md and "| cls4_avgpool |" in md
    m = read_manifest(out)
    assert m.kind == "report" and m.complete and m.stats["linear_best_top1"] == report["linear"]["best"]["top1"]
    assert list((out / "_work").glob("train-*.pt")), "features are cached"
    # the patch-feature PCA picture: 8 val images, one per label first, each next to its PCA colours
    picture = Image.open(out / "patch_pca.png")
    assert report["patch_pca"] == str(out / "patch_pca.png") and "patch_pca.png" in md
    assert picture.size[0] == 8 * 128 and picture.size[1] > 2 * 128  # 16 cells, 8 per row, 2 rows
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)
    pca_cell = pixels[20:20 + 128, 128:256]  # row 0, column 1: the first image's PCA colours
    assert pca_cell.std() > 10, "the PCA picture is not flat"


def test_probe_official_protocol_reuses_cached_features(tmp_path, digits):
    arts, weights = digits
    out = tmp_path / "report"
    common = ["--weights", str(weights), "--train", str(arts["train"]), "--val", str(arts["val"]), "--out", str(out),
              "resolution=56", "workers=0", "linear.lrs=[0.01,0.1]"]
    lvd("probe", *common, "linear.epochs=2")
    cache = sorted((out / "_work").glob("*.pt"))
    mtimes = [p.stat().st_mtime_ns for p in cache]
    res = lvd("probe", *common, "--protocol", "official", "linear.iterations=4", "linear.official_batch_size=32")
    assert "cached features" in res.stderr
    assert [p.stat().st_mtime_ns for p in cache] == mtimes
    report = json.loads((out / "report.json").read_text())
    assert report["linear"]["protocol"]["name"] == "dinov2-augmented" and report["linear"]["protocol"]["iterations"] == 4
    assert len(report["linear"]["grid"]) == 8 and "dinov2-augmented" in (out / "report.md").read_text()
    # the report names the sizes this run used (56 px, val resized to 56 x 256/224 = 64), not the paper's 224/256
    used = "random-resized-crop 56 + horizontal flip (train); resize 64 + center crop 56 (val)"
    assert report["linear"]["protocol"]["augmentation"].startswith(used) and used in (out / "report.md").read_text()


def test_a_negative_pca_image_count_is_a_one_line_config_error(tmp_path, digits):
    arts, weights = digits
    proc = lvd("probe", "--weights", str(weights), "--train", str(arts["train"]), "--val", str(arts["val"]),
               "--out", str(tmp_path / "r"), "pca_images=-1", check=False)
    assert proc.returncode != 0 and "pca_images=-1: must be >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_probe_takes_a_dinov3_file_unchanged(tmp_path, digits):
    arts, _ = digits
    torch.manual_seed(0)
    weights = tmp_path / "dinov3.pth"  # the DINOv3 ViT-S/16 layout, narrowed: RoPE, storage tokens
    save_backbone(build_backbone("vit_s16_v3", embed_dim=192, depth=4, num_heads=3, layerscale_init=1.0), weights)
    out = tmp_path / "report"
    lvd("probe", "--weights", str(weights), "--train", str(arts["train"]), "--val", str(arts["val"]), "--out", str(out),
        "resolution=64", "linear.epochs=5", "linear.lrs=[0.01,0.1]", "workers=0", "pca_images=2")
    report = json.loads((out / "report.json").read_text())
    assert report["knn"]["10"]["top1"] > 25 and report["linear"]["best"]["top1"] > 25
    assert read_manifest(out).complete
