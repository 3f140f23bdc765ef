"""Outputs are safe, through the real `lvd` command: --overwrite never deletes a user's folder or the
command's own input, a foreign folder is refused, an artifact of the stage is deleted with a line
saying so, and no lock file is left behind by a run that ended (successfully or not)."""
from __future__ import annotations

import torch

from lvd_runner import lvd
from lvdtool.artifacts import read_manifest
from lvdtool.models import build_backbone, save_backbone
from web_server import jpeg_bytes, scene

INGEST = ["process.min_side=16", "dedup.perceptual=false"]


def _photos(folder, n=4):
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"p{i}.jpg").write_bytes(jpeg_bytes(scene(i).resize((48, 48))))
    return sorted(p.name for p in folder.iterdir())


def _no_lock_files(out):
    return not [p.name for p in out.iterdir() if p.name.startswith(".lvd-lock")]


def test_crawl_ingest_into_its_own_input_folder_is_refused_and_the_images_stay(tmp_path):
    photos = tmp_path / "photos"
    names = _photos(photos)
    for target in (photos, photos / "art"):
        proc = lvd("crawl-ingest", "--dir", str(photos), "--out", str(target), "--overwrite", *INGEST, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        how = "is" if target == photos else "lies inside"
        assert f"{target}: {how} this command's input inputs.dirs={photos}" in proc.stderr
        assert "--overwrite" not in proc.stderr.split("input inputs.dirs=")[1], "no invitation to --overwrite"
    assert sorted(p.name for p in photos.iterdir()) == names, "the images are intact, nothing added"


def test_overwrite_refuses_a_user_folder_and_a_same_stage_artifact_is_deleted_saying_so(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    (user / "figures").mkdir()
    proc = lvd("crawl-ingest", "--dir", str(photos), "--out", str(user), "--overwrite", *INGEST, check=False)
    assert proc.returncode != 0
    assert (f"{user}: exists and holds 2 entries that are not an lvd crawl-ingest artifact (figures/, thesis.tex); "
            "choose an empty or new --out") in proc.stderr
    assert (user / "thesis.tex").read_text() == "years of work" and sorted(p.name for p in user.iterdir()) == ["figures", "thesis.tex"]

    art = tmp_path / "art"
    lvd("crawl-ingest", "--dir", str(photos), "--out", str(art), *INGEST)
    assert read_manifest(art).complete and _no_lock_files(art), "the run released its lock"
    changed = lvd("crawl-ingest", "--dir", str(photos), "--out", str(art), "--shard-size", "2", *INGEST, check=False)
    assert changed.returncode != 0 and "differs at: config.shard_size" in changed.stderr
    assert "pass --overwrite to delete it (an lvd crawl-ingest artifact: complete, 1 shards," in changed.stderr
    assert _no_lock_files(art), "released after the error too"
    again = lvd("crawl-ingest", "--dir", str(photos), "--out", str(art), "--shard-size", "2", "--overwrite", *INGEST)
    assert f"{art}: --overwrite deleted an lvd crawl-ingest artifact: complete, 1 shards," in again.stderr
    assert len(read_manifest(art).shards) == 2 and _no_lock_files(art)


def test_embed_into_its_own_images_artifact_is_refused_with_or_without_overwrite(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos)
    images = tmp_path / "images"
    lvd("crawl-ingest", "--dir", str(photos), "--out", str(images), *INGEST)
    before, entries = (images / "manifest.json").read_bytes(), sorted(images.rglob("*"))
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    save_backbone(build_backbone("vit_s14", embed_dim=64, depth=1, num_heads=2), weights)
    for overwrite in ([], ["--overwrite"]):
        proc = lvd("embed", "--images", str(images), "--weights", str(weights), "--out", str(images), "resolution=28",
                   *overwrite, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, overwrite
        assert f"{images}: is this command's input images={images}" in proc.stderr
        assert (images / "manifest.json").read_bytes() == before and read_manifest(images).complete
        assert sorted(images.rglob("*")) == entries, "nothing deleted or added (no lock file either)"
