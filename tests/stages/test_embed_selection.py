"""`lvd embed --selection` filters each images shard in the worker that reads it (no global key set)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lvd_runner import lvd
from lvdtool.artifacts import ImagesArtifact, read_manifest
from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.artifacts.manifest import Manifest
from lvdtool.artifacts.selection import read_selection
from lvdtool.data.eval_transform import EvalTransform
from lvdtool.data.shard_images import ShardBatches
from lvdtool.errors import ArtifactError
from lvdtool.stages import embed
from web_server import scene


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    src = tmp_path_factory.mktemp("sel_src")
    for i in range(14):
        scene(300 + i, (96 + 8 * (i % 3), 80)).save(src / f"img{i:02d}.png")
    out = tmp_path_factory.mktemp("sel") / "images"
    lvd("crawl-ingest", "--dir", str(src), "--out", str(out), "--shard-size", "3")
    return out


def write_selection(path: Path, per_shard: dict[str, list[str]], images: Path | None = None) -> Path:
    (path / "shards").mkdir(parents=True)
    for shard, keys in per_shard.items():
        pq.write_table(pa.table({"key": pa.array(keys, pa.string())}), path / "shards" / f"{shard}.parquet")
    Manifest(kind="selection", stage="test", config={}, complete=True,
             shards=[{"name": s, "rows": len(k)} for s, k in per_shard.items()],
             extra={"images": str(images)} if images else {}).write(path)
    return path


@pytest.fixture(scope="module")
def selection(images, tmp_path_factory):
    art = ImagesArtifact(images)
    assert len(art.shards) >= 4
    per_shard = {}
    for i, shard in enumerate(art.shards):  # one selection shard per images shard, as dedup and curate write
        ok = sorted(art.ok_keys(shard))
        per_shard[shard] = [] if i == 1 else ok[::2] if i % 2 == 0 else ok[1:]
    return write_selection(tmp_path_factory.mktemp("sel_art") / "selection", per_shard, images)


def _batches(dataset):
    return [(b["shard"], b["keys"], None if b["images"] is None else b["images"].clone(), b["failed"], b["end"])
            for b in dataset]


def test_shard_by_shard_filter_yields_what_the_global_set_did(images, selection):
    shards = ImagesArtifact(images).shards
    transform = EvalTransform(crop=32)
    _, keys = read_selection(selection)
    old = _batches(ShardBatches(images, shards, transform, 2, keys))
    new = _batches(ShardBatches(images, shards, transform, 2, selection_path=selection))
    assert [b[:2] + b[3:] for b in new] == [b[:2] + b[3:] for b in old]
    assert all((a[2] is None and b[2] is None) or torch.equal(a[2], b[2]) for a, b in zip(old, new))
    assert sorted(k for b in new for k in b[1]) == sorted(keys)


def test_embed_with_selection_over_several_shards(images, selection, tmp_path):
    common = ["images=" + str(images), "arch=vit_test", "random_init=true", "resolution=28",
              "batch_size=1", "workers=0"]
    embed.main(common + [f"out={tmp_path / 'full'}"])
    embed.main(common + [f"out={tmp_path / 'sel'}", f"selection={selection}"])
    full_keys, full_vecs = EmbeddingsArtifact(tmp_path / "full").load()
    keys, vecs = EmbeddingsArtifact(tmp_path / "sel").load()
    _, wanted = read_selection(selection)
    assert sorted(keys) == sorted(wanted) and len(keys) < len(full_keys)
    at = {k: i for i, k in enumerate(full_keys)}
    assert np.array_equal(vecs, full_vecs[[at[k] for k in keys]])
    m = read_manifest(tmp_path / "sel")
    rows = {s["name"]: s["rows"] for s in m.shards}
    shards = ImagesArtifact(images).shards
    assert set(rows) == set(shards) and rows[shards[1]] == 0  # the unselected shard is committed, empty
    assert [i.role for i in m.inputs] == ["images", "selection"]


def test_a_hand_made_selection_with_other_shard_names_selects_the_same(images, selection, tmp_path):
    _, wanted = read_selection(selection)
    hand = write_selection(tmp_path / "hand", {"sel-0": sorted(wanted)})
    shards = ImagesArtifact(images).shards
    transform = EvalTransform(crop=32)
    got = [k for b in ShardBatches(images, shards, transform, 4, selection_path=hand) for k in b["keys"]]
    ref = [k for b in ShardBatches(images, shards, transform, 4, selection_path=selection) for k in b["keys"]]
    assert got == ref and sorted(got) == sorted(wanted)


def test_a_selection_of_another_artifact_is_refused_naming_the_shard(images, tmp_path):
    foreign = write_selection(tmp_path / "foreign", {"other-000007": ["k"]}, images=tmp_path / "other_images")
    with pytest.raises(ArtifactError, match=r"selection shard other-000007 is not a shard of .*images"):
        embed.main([f"images={images}", f"out={tmp_path / 'x'}", f"selection={foreign}", "arch=vit_test",
                    "random_init=true", "workers=0"])
    assert not (tmp_path / "x").exists()
