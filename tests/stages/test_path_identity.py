"""A run's identity compares resolved paths: the same command resumes whatever the cwd and however
its paths are spelled (relative, absolute, from another directory); another config is still refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lvdtool.artifacts import read_manifest
from lvdtool.errors import ConfigError
from lvdtool.stages import pretrain
from web_server import scene

LVD = str(Path(sys.executable).with_name("lvd"))
TINY = ["recipe=vit_test", "model.patch_size=8", "model.img_size=32", "crops.global_crops_size=32",
        "crops.local_crops_size=16", "train.batch_size_per_gpu=2",
        "train.iterations=1", "data.workers=0"]


def lvd_in(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LVD_QUIET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([LVD, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture()
def work(tmp_path) -> Path:
    """tmp/work/src (6 PNGs) and tmp/work/deeper/down (another cwd)."""
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "deeper" / "down").mkdir(parents=True)
    for i in range(6):
        scene(300 + i, (96, 80)).save(work / "src" / f"s{i}.png")
    return work


def test_crawl_ingest_resumes_from_any_cwd_and_spelling_and_refuses_another_config(work):
    first = lvd_in(work, "crawl-ingest", "--dir", "src", "--out", "images", "--shard-size", "4")
    assert first.returncode == 0, first.stderr
    stored = read_manifest(work / "images").config
    assert stored["out"] == str(work / "images") and stored["inputs"]["dirs"] == [str(work / "src")]
    spellings = [
        (work.parent, ["--dir", str(work / "src"), "--out", str(work / "images")]),  # absolute
        (work / "deeper" / "down", ["--dir", "../../src/", "--out", "./../../images"]),  # relative from elsewhere
    ]
    for cwd, paths in spellings:
        again = lvd_in(cwd, "crawl-ingest", *paths, "--shard-size", "4")
        assert again.returncode == 0 and "differs at" not in again.stderr, (cwd, paths, again.stderr)
        assert "already complete" in again.stdout + again.stderr
    other = lvd_in(work / "deeper", "crawl-ingest", "--dir", "../src", "--out", "../images", "--shard-size", "3")
    assert other.returncode != 0 and "differs at: config.shard_size" in other.stderr


def test_a_manifest_that_stored_relative_paths_still_resumes_where_they_resolve_the_same(work):
    assert lvd_in(work, "crawl-ingest", "--dir", "src", "--out", "images").returncode == 0
    path = work / "images" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["out"], manifest["config"]["inputs"]["dirs"] = "images", ["src"]  # as lvd stored them before
    path.write_text(json.dumps(manifest))
    same = lvd_in(work, "crawl-ingest", "--dir", str(work / "src"), "--out", str(work / "images"))
    assert same.returncode == 0 and "differs at" not in same.stderr, same.stderr
    moved = lvd_in(work / "deeper", "crawl-ingest", "--dir", str(work / "src"), "--out", str(work / "images"))
    assert moved.returncode != 0 and "differs at: config.inputs.dirs, config.out" in moved.stderr


def test_pretrain_resumes_with_an_absolute_path_from_another_cwd(work, monkeypatch):
    # in process (pretrain.main is what `lvd pretrain` calls): three subprocesses would import torch three times
    assert lvd_in(work, "crawl-ingest", "--dir", "src", "--out", "images").returncode == 0
    monkeypatch.chdir(work)
    pretrain.main([*TINY, "data.images=images", "out=run"])
    config = read_manifest(work / "run").config
    assert config["out"] == str(work / "run") and config["data"]["images"] == str(work / "images")
    assert config["data"]["augment_backend"] == "numba"  # "auto", stored as what it resolved to
    monkeypatch.chdir(work / "deeper" / "down")
    again = dict(pretrain.main([*TINY, f"data.images={work / 'images'}", "out=../../run"]))
    assert "resumed from" in again and again["resumed from"] == "ckpt-00000001", again
    with pytest.raises(ConfigError, match=r"another config \(optim\.weight_decay: 0\.04 -> 0\.01\)"):
        pretrain.main([*TINY, "data.images=../../images", f"out={work / 'run'}", "optim.weight_decay=0.01"])
    with pytest.raises(ConfigError, match=r"another config \(data\.augment_backend: 'numba' -> 'torch'\)"):
        pretrain.main([*TINY, "data.images=../../images", f"out={work / 'run'}", "data.augment_backend=torch"])
