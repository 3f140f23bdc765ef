"""`lvd embed model.kind=torchscript`: a copy-detection descriptor file (SSCD's published form)."""
from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lvd_runner import lvd, popen
from lvdtool.artifacts import ImagesArtifact, read_manifest
from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.data.preprocess import PreprocessConfig, ResizeCropTransform, normalize_with
from lvdtool.errors import CheckpointError
from lvdtool.stages import embed
from web_server import scene


class TinyDescriptor(nn.Module):
    """A small conv net mapping [B, 3, H, W] to [B, dim]; `repeats` extra convs make it slow on purpose."""

    def __init__(self, dim: int = 16, repeats: int = 0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.repeats = repeats
        self.head = nn.Linear(8, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        for _ in range(self.repeats):
            y = torch.relu(self.body(y)) + y * 0.5
        return self.head(y.mean(dim=(2, 3)))


class Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=(2, 3))
        return y / (y - y)  # 0/0: NaN for every image


def script(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.script(module.eval()).save(str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos):
    src = tmp_path_factory.mktemp("ts_src")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        photos[name].save(src / f"{name}.jpg", quality=90)  # four aspect ratios: per-shape groups
    for i in range(11):
        scene(200 + i, (120 + 10 * (i % 4), 90)).save(src / f"scene{i:02d}.png")
    out = tmp_path_factory.mktemp("ts") / "images"
    lvd("crawl-ingest", "--dir", str(src), "--out", str(out), "--shard-size", "3")
    return out


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    return script(TinyDescriptor(), tmp_path_factory.mktemp("m") / "tiny.torchscript.pt")


def direct(model_file: Path, images: Path, pre: PreprocessConfig) -> dict[str, np.ndarray]:
    """The module run by hand on each image, one at a time, with the same preprocessing."""
    module = torch.jit.load(str(model_file)).eval()
    transform = ResizeCropTransform.from_config(pre)
    out = {}
    with torch.no_grad():
        for sample in ImagesArtifact(images).iter_samples():
            x = normalize_with(transform(sample.data)[None], pre.mean, pre.std)
            out[sample.key] = torch.nn.functional.normalize(module(x), dim=1)[0].numpy()
    return out


def assert_matches_direct(out: Path, ref: dict[str, np.ndarray]) -> None:
    keys, vecs = EmbeddingsArtifact(out).load()
    assert sorted(keys) == sorted(ref) and len(set(keys)) == len(keys)
    got = vecs.astype(np.float32)
    want = np.stack([ref[k] for k in keys])
    assert np.abs(got - want).max() < 2e-3  # float16 storage
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=2e-3)


def test_vectors_equal_the_module_on_the_same_preprocessing(tmp_path, images, model_file):
    out = tmp_path / "emb"
    # the SSCD preset's shape (shorter side, no crop), smaller: images of several shapes in one batch
    lvd("embed", "--images", str(images), "--out", str(out), "--batch-size", "4", "model.kind=torchscript",
        f"model.path={model_file}", "model.dim=16", "preprocess.resize=48")
    assert_matches_direct(out, direct(model_file, images, PreprocessConfig(resize=48)))
    m = read_manifest(out)
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    model = m.extra["model"]
    assert model["kind"] == "torchscript" and model["sha256"] == sha and model["dim"] == 16
    assert model["descriptor"] == f"tiny.torchscript.pt@sha256:{sha[:16]}"
    assert model["preprocess"]["resize"] == 48 and model["preprocess"]["crop"] is None
    assert model["preprocess"]["mean"] == [0.485, 0.456, 0.406] and m.extra["dim"] == 16
    assert any(i.role == "descriptor" and i.fingerprint == f"sha256:{sha}" for i in m.inputs)


def test_sigkill_then_rerun_with_the_square_preset(tmp_path, images):
    slow = script(TinyDescriptor(repeats=40), tmp_path / "slow.torchscript.pt")
    out = tmp_path / "killed"
    args = ["embed", "--images", str(images), "--out", str(out), "--batch-size", "1", "workers=0",
            "model.kind=torchscript", f"model.path={slow}", "preprocess=sscd_skew320", "preprocess.resize=96"]
    proc = popen(*args)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "_work").exists() and list((out / "_work").glob("*.done.json"))):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not read_manifest(out).complete
    lvd(*args)
    assert read_manifest(out).complete
    assert_matches_direct(out, direct(slow, images, PreprocessConfig(resize=96, square=True)))


def _run(tmp_path: Path, images: Path, *overrides: str) -> None:
    embed.main([f"images={images}", f"out={tmp_path / 'out'}", "workers=0", "model.kind=torchscript",
                "preprocess.resize=32", *overrides])


def test_bad_descriptor_files_are_one_line_errors(tmp_path, images, model_file):
    with pytest.raises(CheckpointError, match=r"model.path .*nope.pt: no such file"):
        _run(tmp_path, images, f"model.path={tmp_path / 'nope.pt'}")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all" * 10)
    with pytest.raises(CheckpointError, match=r"garbage.pt: not a TorchScript file"):
        _run(tmp_path, images, f"model.path={garbage}")
    state_dict = tmp_path / "weights.pt"
    torch.save(TinyDescriptor().state_dict(), state_dict)  # a weights file, not a scripted module
    with pytest.raises(CheckpointError, match=r"weights.pt: not a TorchScript file"):
        _run(tmp_path, images, f"model.path={state_dict}")
    with pytest.raises(CheckpointError, match=r"tiny.torchscript.pt: outputs 16-d vectors but model.dim=512"):
        _run(tmp_path, images, f"model.path={model_file}", "model.dim=512")


def test_non_finite_outputs_stop_naming_the_shard_and_key(tmp_path, images):
    broken = script(Broken(), tmp_path / "broken.torchscript.pt")
    first = ImagesArtifact(images).shards[0]
    with pytest.raises(CheckpointError, match=rf"broken.torchscript.pt: non-finite output for key \S+ of shard {first}"):
        _run(tmp_path, images, f"model.path={broken}")


def test_the_cli_prints_one_line(tmp_path, images):
    res = lvd("embed", "--images", str(images), "--out", str(tmp_path / "o"), "model.kind=torchscript",
              f"model.path={tmp_path / 'missing.pt'}", check=False)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: model.path") and "no such file" in lines[0]
    res = lvd("embed", "--images", str(images), "--out", str(tmp_path / "o"), "model.kind=torchscript", check=False)
    assert res.returncode == 2 and "needs model.path=FILE" in res.stderr


def test_a_descriptor_file_without_model_kind_is_refused(tmp_path, images, model_file):
    from lvdtool.errors import ConfigError

    with pytest.raises(ConfigError, match="model.path is read with model.kind=torchscript"):
        embed.main([f"images={images}", f"out={tmp_path / 'o'}", f"model.path={model_file}"])
    assert not (tmp_path / "o").exists()
