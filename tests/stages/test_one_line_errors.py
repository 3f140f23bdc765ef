"""What reaches the user is one line naming the file, shard or key, and a non-zero exit; a
traceback only with --debug (before or after the command) or LVD_DEBUG=1; --json prints one object."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lvd_runner import lvd
from lvdtool.cli import _error_line
from lvdtool.artifacts import ImagesArtifact
from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.errors import ArtifactError

SHARD = "shard-000001"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, photos):
    """A folder of 5 photos and a dangling symlink, ingested in shards of 3, and its embeddings."""
    root = tmp_path_factory.mktemp("one_line")
    src = root / "src"
    (src / "a").mkdir(parents=True)
    for i, (name, img) in enumerate(list(photos.items())[:5]):
        img.resize((96, 80)).save(src / ("a" if i % 2 else "") / f"{name}.jpg", quality=90)
    os.symlink(root / "nowhere.jpg", src / "a" / "broken.jpg")
    images = root / "images"
    ingest = lvd("crawl-ingest", "--dir", str(src), "--out", str(images), "--shard-size", "3", "--json")
    emb = root / "emb"
    lvd("embed", "--images", str(images), "--arch", "vit_test", "--out", str(emb), "random_init=true", "resolution=56")
    return root, images, emb, ingest


def one_error_line(res) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip().startswith("error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_a_dangling_symlink_is_a_counted_skipped_record_and_the_rest_is_ingested(artifacts):
    _, images, _, ingest = artifacts
    summary = json.loads(ingest.stdout)
    manifest = json.loads((images / "manifest.json").read_text())
    assert manifest["complete"]
    rows = ImagesArtifact(images).read_index().to_pylist()
    assert len(rows) == 6 and sum(r["status"] == "ok" for r in rows) == 5
    broken = [r for r in rows if r["status"] != "ok"]
    assert [(r["relpath"], r["status"]) for r in broken] == [("a/broken.jpg", "missing")]
    assert broken[0]["error"].startswith("dangling symlink to ") and broken[0]["error"].endswith("nowhere.jpg")
    assert summary["command"] == "crawl-ingest" and summary["out"] == str(images.resolve())
    assert summary["summary"]["status"] == {"ok": 5, "missing": 1}


def _corrupt_footer(path: Path) -> None:
    """Same size, no Parquet magic at the end: the size checks pass, the read fails."""
    data = bytearray(path.read_bytes())
    data[-4:] = b"XXXX"
    path.write_bytes(bytes(data))


def test_the_readers_refuse_a_corrupt_parquet_file_by_name(tmp_path, artifacts):
    _, images, emb, _ = artifacts
    bad_images, bad_emb = tmp_path / "images", tmp_path / "emb"
    shutil.copytree(images, bad_images)
    shutil.copytree(emb, bad_emb)
    _corrupt_footer(bad_images / "shards" / f"{SHARD}.parquet")
    _corrupt_footer(bad_emb / "shards" / f"{SHARD}.parquet")
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: unreadable index of shard {SHARD} \(Parquet magic"):
        ImagesArtifact(bad_images).read_index()
    art = EmbeddingsArtifact(bad_emb)
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: unreadable embeddings shard {SHARD}"):
        art.read_shard(SHARD)
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: unreadable embeddings shard {SHARD}"):
        art.keys()
    assert len(pq.read_table(bad_images / "shards" / "shard-000000.parquet")) == 3  # the other shard reads


@pytest.mark.parametrize("command", ["inspect", "embed", "dedup", "curate", "pretrain"])
def test_a_corrupt_parquet_shard_is_one_line_naming_it(tmp_path, artifacts, command):
    _, images, emb, _ = artifacts
    source = emb if command in ("dedup", "curate") else images
    bad = tmp_path / "bad"
    shutil.copytree(source, bad)
    _corrupt_footer(bad / "shards" / f"{SHARD}.parquet")
    out = str(tmp_path / "out")
    args = {
        "inspect": ["inspect", str(bad)],
        "embed": ["embed", "--images", str(bad), "--arch", "vit_test", "--out", out, "random_init=true", "resolution=56"],
        "dedup": ["dedup", "--embeddings", str(bad), "--out", out, "representative=first"],
        "curate": ["curate", "--pool", str(bad), "--method", "hkmeans", "--target", "2", "--out", out,
                   "hkmeans.levels=[{n_clusters:2}]", "report.enabled=false"],
        "pretrain": ["pretrain", "--arch", "vit_test", "--images", str(bad), "--out", out, "--iterations", "1",
                     "--device", "cpu", "--workers", "0"],
    }[command]
    line = one_error_line(lvd(*args, check=False))
    assert f"{SHARD}.parquet" in line and "Parquet" in line


def test_bad_options_are_one_line_naming_the_key(tmp_path, artifacts):
    root, images, _, _ = artifacts
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    embed = ("embed", "--images", str(images), "--arch", "vit_test", "random_init=true", "resolution=56")
    line = one_error_line(lvd(*embed, "--out", str(a_file), check=False))
    assert str(a_file) in line
    line = one_error_line(lvd(*embed, "--out", str(tmp_path / "e"), "device=tpu", check=False))
    assert line == "error: config embed: device='tpu': expected one of auto, cpu, cuda, cuda:N"
    res = lvd("pretrain", "--arch", "vit_test", "--images", str(images), "--out", str(tmp_path / "p"), "--workers", "-1",
              check=False)
    assert one_error_line(res) == "error: config pretrain: data.workers=-1: must be >= 0"
    assert res.returncode == 2 and not (tmp_path / "p").exists()
    res = lvd("inspect", str(images), "--n", "-3", "--grid", str(tmp_path / "g.png"), check=False)
    assert one_error_line(res) == "error: inspect: --n -3: must be >= 1 (images in the contact sheet)"
    assert not (tmp_path / "g.png").exists()


def test_debug_before_or_after_the_command_shows_the_traceback(tmp_path, artifacts):
    _, images, _, _ = artifacts
    args = ["embed", "--images", str(images), "--arch", "vit_test", "--out", str(tmp_path / "e"), "resolution=0"]
    # (without them the same command prints only its error line: test_config_validation)
    for res in (lvd(*args, "--debug", check=False), lvd("--debug", *args, check=False),
                lvd(*args, check=False, env={"LVD_DEBUG": "1"})):
        assert res.returncode == 2
        assert "Traceback (most recent call last)" in res.stderr and "config_checks.py" in res.stderr
        assert res.stderr.strip().splitlines()[-1] == "error: config embed: resolution=0: must be >= 1"


def test_json_prints_one_object_on_stdout(tmp_path, artifacts):
    _, images, emb, _ = artifacts
    res = lvd("--json", "inspect", str(emb))
    summary = json.loads(res.stdout)  # the whole of stdout is one object
    assert summary["command"] == "inspect" and summary["summary"]["summary"]["kind"] == "embeddings"
    assert "embeddings" in res.stderr  # the human summary went to stderr
    failed = lvd("embed", "--images", str(images), "--arch", "vit_test", "--out", str(tmp_path / "e"), "resolution=0",
                 "--json", check=False)
    error = json.loads(failed.stdout)
    assert failed.returncode == 2
    assert error == {"command": "embed", "out": None, "summary": None, "exit_code": 2,
                     "error": "config embed: resolution=0: must be >= 1"}


def test_an_os_error_is_its_path_and_reason_even_from_a_worker(tmp_path):
    try:
        open(tmp_path / "absent" / "x.parquet", "rb")
    except OSError as exc:
        assert _error_line(exc) == (f"{tmp_path / 'absent' / 'x.parquet'}: No such file or directory", 1)
    # how torch's DataLoader re-raises a worker's OSError: the same type, the worker's traceback as its text
    wrapped = FileNotFoundError("Caught FileNotFoundError in DataLoader worker process 0.\nOriginal Traceback "
                                "(most recent call last):\n  File \"x.py\", line 1\n"
                                "FileNotFoundError: [Errno 2] No such file or directory: '/data/shard-000003.tar'\n")
    assert _error_line(wrapped) == ("FileNotFoundError: [Errno 2] No such file or directory: '/data/shard-000003.tar'", 1)
