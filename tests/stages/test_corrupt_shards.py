"""A tar shard damaged in place (same size) is refused by name, never read as a shorter shard."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from lvd_runner import lvd
from lvdtool.artifacts import ImagesArtifact
from lvdtool.data.image_table import ImageTable
from lvdtool.data.pretrain_loader import ImageReader
from lvdtool.errors import ArtifactError
from web_server import scene

SHARD = "shard-000000"


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("corrupt")
    src = root / "src"
    src.mkdir()
    for name, img in photos.items():
        img.save(src / f"{name}.jpg", quality=90)
    for i in range(4):
        scene(200 + i, (160, 120)).save(src / f"scene{i:02d}.png")
    out = root / "images"
    lvd("crawl-ingest", "--dir", str(src), "--out", str(out), "--shard-size", "4")
    return out


def damaged_copy(images: Path, dest: Path) -> tuple[Path, str]:
    """A copy whose first shard has the header of a middle image member overwritten (same size);
    returns the copy and the damaged member's key."""
    shutil.copytree(images, dest)
    tar_path = dest / "shards" / f"{SHARD}.tar"
    with tarfile.open(tar_path) as tar:
        members = [m for m in tar.getmembers() if not m.name.endswith(".json")]
    victim = members[len(members) // 2]
    size = tar_path.stat().st_size
    with open(tar_path, "r+b") as f:
        f.seek(victim.offset)
        f.write(b"\xde\xad" * 256)
    assert tar_path.stat().st_size == size
    return dest, victim.name.rpartition(".")[0]


def test_embed_refuses_a_shard_damaged_in_place_in_one_line(tmp_path, images):
    bad, key = damaged_copy(images, tmp_path / "bad")
    out = tmp_path / "emb"
    res = lvd("embed", "--images", str(bad), "--arch", "vit_test", "--out", str(out), "random_init=true",
              "resolution=56", check=False)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error:") and f"{SHARD}.tar" in lines[0] and key in lines[0]
    assert not (out / "manifest.json").exists() or not json.loads((out / "manifest.json").read_text())["complete"]


def test_the_stream_reader_names_every_key_it_could_not_read(tmp_path, images):
    bad, key = damaged_copy(images, tmp_path / "bad")
    art = ImagesArtifact(bad)
    with pytest.raises(ArtifactError, match=rf"{SHARD}.*damaged: \d+ of its 4 ok keys.*first: {key}"):
        list(art.iter_shard(SHARD))
    assert len(list(ImagesArtifact(images).iter_shard(SHARD))) == 4  # the intact artifact reads whole


def test_the_pretrain_reader_checks_the_header_before_the_data(tmp_path, images):
    # pretraining reads by the index's offsets, past the damaged header: the header is checked
    bad, key = damaged_copy(images, tmp_path / "bad")
    table = ImageTable.from_artifact(ImagesArtifact(bad))
    reader = ImageReader(table)
    rows = {table.key(i): i for i in range(len(table))}
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.tar: .*damaged.*key {key}"):
        reader.read(rows[key])
    good = next(k for k in rows if k != key)
    intact = ImageReader(ImageTable.from_artifact(ImagesArtifact(images)))
    assert reader.read(rows[good]) == intact.read(rows[good])


def test_a_header_naming_another_key_is_refused(tmp_path, images):
    # an index whose offsets no longer describe the tar (rows swapped) reads the wrong image otherwise
    table = ImageTable.from_artifact(ImagesArtifact(images))
    table.offsets[[0, 1]] = table.offsets[[1, 0]].copy()
    table.sizes[[0, 1]] = table.sizes[[1, 0]].copy()
    with pytest.raises(ArtifactError, match=f"key {table.key(0)} does not match the index"):
        ImageReader(table).read(0)


def test_verify_full_refuses_one_flipped_data_byte_by_its_recorded_sha256(tmp_path, images):
    # a flipped bit inside an image's data leaves every header intact: only the sha256 finds it
    bad = tmp_path / "bad"
    shutil.copytree(images, bad)
    tar_path = bad / "shards" / f"{SHARD}.tar"
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar.getmembers() if not m.name.endswith(".json"))
    with open(tar_path, "r+b") as f:
        f.seek(member.offset_data + member.size // 2)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 1]))
    res = lvd("embed", "--images", str(bad), "--arch", "vit_test", "--out", str(tmp_path / "emb"), "random_init=true",
              "resolution=56", "verify=full", check=False)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    assert f"{SHARD}.tar: sha256 differs" in lines[0]
    assert not (tmp_path / "emb").exists()  # a new output's inputs are checked before it is created
    ImagesArtifact(images).verify_tar(SHARD)  # the intact artifact passes
