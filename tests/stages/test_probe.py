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
    official = [*common, "--protocol", "official", "linear.iterations=4", "linear.official_batch_size=32"]
    refused = lvd("probe", *official, check=False)  # another protocol is another report: not silently replaced
    assert refused.returncode != 0 and "config.protocol" in refused.stderr and "pass --overwrite" in refused.stderr
    res = lvd("probe", *official, "--overwrite")
    assert f"{out}: --overwrite deleted an lvd probe report: complete" in res.stderr and "kept 2 reusable files" in res.stderr
    assert "cached features" in res.stderr
    assert [p.stat().st_mtime_ns for p in cache] == mtimes
    report = json.loads((out / "report.json").read_text())
    assert report["linear"]["protocol"]["name"] == "dinov2-augmented" and report["linear"]["protocol"]["iterations"] == 4
    assert len(report["linear"]["grid"]) == 8 and "dinov2-augmented" in (out / "report.md").read_text()
    # the report names the sizes this run used (56 px, val resized to 56 x 256/224 = 64), not the paper's 224/256
    used = "random-resized-crop 56 + horizontal flip (train); resize 64 + center crop 56 (val)"
    assert report["linear"]["protocol"]["augmentation"].startswith(used) and used in (out / "report.md").read_text()


CHEAP = ["resolution=56", "workers=0", "linear.lrs=[0.1]", "linear.epochs=1", "pca_images=0", "knn.ks=[10]"]


def test_a_probe_rerun_prints_the_stored_report_and_other_weights_are_refused(tmp_path, digits):
    arts, weights = digits
    out = tmp_path / "report"
    common = ["--train", str(arts["train"]), "--val", str(arts["val"]), "--out", str(out), *CHEAP]
    lvd("probe", "--weights", str(weights), *common)
    stored = (out / "report.json").read_bytes()
    again = lvd("probe", "--weights", str(weights), *common, "workers=1", "--json")  # workers do not change the report
    assert "already complete (same weights, data and config)" in again.stderr and "k-NN top-1 (k=10)" in again.stderr
    printed = json.loads(again.stdout)  # --json: the stored report, for scripts
    assert printed["command"] == "probe" and printed["summary"] == json.loads(stored)
    assert (out / "report.json").read_bytes() == stored
    torch.manual_seed(1)
    other = tmp_path / "other.pth"
    save_backbone(build_backbone("vit_s14", embed_dim=192, depth=4, num_heads=3, layerscale_init=1.0), other)
    refused = lvd("probe", "--weights", str(other), *common, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"{out}: holds a probe report of another config or inputs (differs at: config.weights, inputs.weights)" in refused.stderr
    assert (out / "report.json").read_bytes() == stored and read_manifest(out).complete


def test_probe_out_on_an_embeddings_artifact_is_refused_and_it_stays_valid(tmp_path, digits):
    from lvdtool.artifacts.embeddings import EmbeddingsArtifact

    arts, weights = digits
    emb = tmp_path / "emb"
    lvd("embed", "--images", str(arts["val"]), "--weights", str(weights), "--out", str(emb), "resolution=28", "workers=0")
    before = (emb / "manifest.json").read_bytes()
    refused = lvd("probe", "--weights", str(weights), "--train", str(arts["train"]), "--val", str(arts["val"]),
                  "--out", str(emb), *CHEAP, "--overwrite", check=False)  # not even --overwrite deletes it
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert f"{emb}: holds a 'embeddings' artifact from stage 'embed', not an lvd probe report" in refused.stderr
    assert (emb / "manifest.json").read_bytes() == before
    assert EmbeddingsArtifact(emb).num_vectors == 150, "still a valid embeddings artifact (what dedup opens)"


def test_probe_with_no_val_label_in_train_is_one_line_naming_both(tmp_path, digits):
    from PIL import Image as PILImage

    arts, weights = digits
    folder = tmp_path / "unseen"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            PILImage.new("RGB", (32, 32), (60 * i, 90, 200 if label == "cat" else 20)).save(folder / label / f"{i}.png")
    val = tmp_path / "unseen_art"
    lvd("crawl-ingest", "--dir", str(folder), "--label-from-dir", "--out", str(val), "process.min_side=16",
        "dedup.perceptual=false")
    proc = lvd("probe", "--weights", str(weights), "--train", str(arts["train"]), "--val", str(val),
               "--out", str(tmp_path / "r"), *CHEAP, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "KeyError" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(val) in lines[0] and str(arts["train"]) in lines[0], proc.stderr
    assert "has a label that occurs in" in lines[0] and "val labels: cat, dog" in lines[0]


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
