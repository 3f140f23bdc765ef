"""`lvd embed` end to end on an images artifact made by crawl-ingest."""
from __future__ import annotations

import io
import signal
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lvd_runner import lvd, popen
from lvdtool.artifacts import ImagesArtifact, read_manifest
from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.data.eval_transform import EvalTransform, normalize_batch
from lvdtool.models import build_backbone, load_backbone, save_backbone
from web_server import scene


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("emb")
    src = root / "src"
    src.mkdir()
    for name, img in photos.items():
        img.save(src / f"{name}.jpg", quality=90)
    for i in range(18):
        scene(100 + i, (160, 120)).save(src / f"scene{i:02d}.png")
    out = root / "images"
    lvd("crawl-ingest", "--dir", str(src), "--out", str(out), "--shard-size", "3")
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "backbone.pth"
    save_backbone(build_backbone("vit_s14", embed_dim=192, depth=2, num_heads=3), path)
    return path


def test_one_vector_per_ok_key_matching_a_direct_forward(tmp_path, images, weights):
    out = tmp_path / "emb"
    lvd("embed", "--images", str(images), "--weights", str(weights), "--out", str(out), "--batch-size", "4")
    emb = EmbeddingsArtifact(out)
    keys, vecs = emb.load()
    art = ImagesArtifact(images)
    ok = sorted(r["key"] for r in art.read_index().to_pylist() if r["status"] == "ok")
    assert sorted(keys) == ok and len(set(keys)) == len(keys)
    assert vecs.shape == (len(ok), 192)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=2e-3)
    m = read_manifest(out)
    assert m.extra["dim"] == 192 and m.extra["token"] == "cls" and m.extra["model"]["weights_sha256"]
    assert m.inputs[0].fingerprint == read_manifest(images).fingerprint
    # the stored vector equals the model's CLS output on the same preprocessing
    model = load_backbone(weights).eval()
    sample = next(art.iter_samples())
    x = normalize_batch(EvalTransform(224)(sample.data)[None])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model(x)["x_norm_clstoken"], dim=1)[0].numpy()
    got = vecs[keys.index(sample.key)].astype(np.float32)
    assert np.abs(got - ref).max() < 2e-3


def test_a_dinov3_file_embeds_unchanged(tmp_path, images):
    torch.manual_seed(0)
    weights = tmp_path / "dinov3.pth"  # the DINOv3 ViT-S/16 layout at width 192: RoPE, storage tokens
    save_backbone(build_backbone("vit_s16_v3", embed_dim=192, depth=2, num_heads=3, layerscale_init=1.0), weights)
    out = tmp_path / "emb"
    lvd("embed", "--images", str(images), "--weights", str(weights), "--out", str(out), "resolution=96", "workers=0")
    keys, vecs = EmbeddingsArtifact(out).load()
    assert read_manifest(out).extra["model"]["arch"] is None  # narrowed: no registered name, read off the keys
    model = load_backbone(weights).eval()
    assert model.config.family == "dinov3"
    sample = next(ImagesArtifact(images).iter_samples())
    x = normalize_batch(EvalTransform(96)(sample.data)[None])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model(x)["x_norm_clstoken"], dim=1)[0].numpy()
    assert np.abs(vecs[keys.index(sample.key)].astype(np.float32) - ref).max() < 2e-3


def test_cls_plus_avgpool_token(tmp_path, images, weights):
    out = tmp_path / "emb2"
    lvd("embed", "--images", str(images), "--weights", str(weights), "--out", str(out), "--token", "cls+avgpool", "workers=0")
    emb = EmbeddingsArtifact(out)
    assert emb.dim == 384 and emb.num_vectors == ImagesArtifact(images).read_index().num_rows


def _corrupt_one(images: Path, tmp_path: Path) -> tuple[Path, str]:
    """Copy the artifact and overwrite one stored image with garbage of the same length."""
    import shutil

    dst = tmp_path / "corrupt"
    shutil.copytree(images, dst)
    tar_path = sorted((dst / "shards").glob("*.tar"))[0]
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    victim = next(m.name for m, _ in members if not m.name.endswith(".json"))
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for m, data in members:
            if m.name == victim:
                data = b"\x00garbage" * (len(data) // 8) + b"\x00" * (len(data) % 8)
            tar.addfile(m, io.BytesIO(data))
    return dst, victim.split(".")[0]


def test_a_corrupt_sample_is_reported_not_fatal(tmp_path, images, weights):
    corrupt, key = _corrupt_one(images, tmp_path)
    out = tmp_path / "emb3"
    lvd("embed", "--images", str(corrupt), "--weights", str(weights), "--out", str(out))
    m = read_manifest(out)
    assert m.stats["failed"] == 1
    emb = EmbeddingsArtifact(out)
    assert key not in emb.keys() and emb.num_vectors == ImagesArtifact(corrupt).read_index().num_rows - 1
    import pyarrow.parquet as pq

    failed = pq.read_table(out / "failed.parquet").to_pylist()
    assert [f["key"] for f in failed] == [key] and failed[0]["error"]


def test_sigkill_then_rerun_completes_without_duplicates(tmp_path, images, weights):
    ref = tmp_path / "ref"
    args = ["embed", "--images", str(images), "--weights", str(weights), "--batch-size", "1", "workers=0", "resolution=448"]
    lvd(*args, "--out", str(ref))
    out = tmp_path / "killed"
    proc = popen(*args, "--out", str(out))
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "_work").exists() and list((out / "_work").glob("*.done.json"))):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not read_manifest(out).complete
    lvd(*args, "--out", str(out))
    k1, v1 = EmbeddingsArtifact(out).load()
    k0, v0 = EmbeddingsArtifact(ref).load()
    assert k1 == k0 and len(set(k1)) == len(k1)
    assert np.array_equal(v1, v0)


def test_arch_option_with_random_init(tmp_path, images):
    # `--arch` must reach the embed config as a plain key (not a config group of another stage)
    out = tmp_path / "emb_random"
    lvd("embed", "--images", str(images), "--arch", "vit_test", "--out", str(out), "random_init=true", "resolution=56")
    m = read_manifest(out)
    assert m.extra["model"]["arch"] == "vit_test" and m.extra["model"]["weights_sha256"] == "random-init-seed0"
    res = lvd("embed", "--images", str(images), "--out", str(tmp_path / "x"), check=False)
    assert res.returncode == 2 and "needs --weights" in res.stderr
