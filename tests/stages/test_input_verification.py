"""Inputs are verified (issue 14, item 2): every reader checks the members it reads against the
index or manifest, `verify=full` checks the recorded sha256 of every input file, a selection names
the images artifact (and fingerprint) its keys belong to, and dedup/curate refuse images re-ingested
after the embeddings were made. All on real artifacts made by `lvd crawl-ingest` / `lvd embed` /
`lvd dedup`: images A (photos) and images B (other pictures, the same shard names and keys)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvd_runner import lvd
from lvdtool.artifacts import ImagesArtifact, read_manifest
from lvdtool.artifacts.embeddings import EmbeddingsArtifact, vectors_of
from lvdtool.artifacts.selection import Selection, read_selection
from lvdtool.artifacts.verify import verify_input
from lvdtool.curation.image_lookup import ImageLookup
from lvdtool.data.image_table import ImageTable
from lvdtool.data.pretrain_loader import ImageReader
from lvdtool.data.shard_images import ShardBatches
from lvdtool.errors import ArtifactError, ConfigError, InputError
from lvdtool.overrides import sugar
from lvdtool.stages import curate as curate_stage
from lvdtool.stages import dedup as dedup_stage
from lvdtool.stages import embed as embed_stage
from web_server import scene

SHARD = "shard-000000"
NO_INGEST_DEDUP = ["dedup.perceptual=false", "dedup.exact=false"]
EMBED = ["--arch", "vit_test", "random_init=true", "resolution=56", "workers=0"]
TINY_PRETRAIN = ["recipe=vit_test", "model.patch_size=8", "model.img_size=32", "crops.global_crops_size=32",
                 "crops.local_crops_size=16", "crops.n_local_crops=2", "train.batch_size_per_gpu=2",
                 "train.iterations=1", "data.workers=0"]


def ingest(src: Path, out: Path) -> Path:
    lvd("crawl-ingest", "--dir", str(src), "--out", str(out), "--shard-size", "4", *NO_INGEST_DEDUP)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, photos):
    """images A (6 photos + 2 scenes), images B (8 other scenes: the same 2 shard names and 8 keys),
    embeddings of A, and dedup's selection of A."""
    root = tmp_path_factory.mktemp("verify")
    src_a, src_b = root / "src_a", root / "src_b"
    src_a.mkdir()
    src_b.mkdir()
    for name, img in photos.items():
        img.save(src_a / f"{name}.jpg", quality=90)
    for i in range(2):
        scene(400 + i, (160, 120)).save(src_a / f"zscene{i}.png")
    for i in range(8):
        scene(500 + i, (160, 120)).save(src_b / f"scene{i}.png")
    images_a, images_b = ingest(src_a, root / "images_a"), ingest(src_b, root / "images_b")
    emb_a = root / "emb_a"
    lvd("embed", "--images", str(images_a), "--out", str(emb_a), *EMBED)
    sel_a = root / "sel_a"
    # random-init features: a threshold that keeps every image (each selection shard holds its 4 keys)
    dedup_stage.main(sugar(embeddings=str(emb_a), out=str(sel_a)) + ["k=4", "threshold=0.9999", "calibration.pairs=1"])
    assert [s["rows"] for s in read_manifest(sel_a).shards] == [4, 4]
    return {"root": root, "images_a": images_a, "images_b": images_b, "emb_a": emb_a, "sel_a": sel_a}


def embed_overrides(images: Path, out: Path, selection: Path | None = None) -> list[str]:
    """`lvd embed` in this process (the stage's `main`): for tests where the refusal, not the CLI, is the point."""
    return sugar(images=str(images), out=str(out), selection=str(selection) if selection else None, arch="vit_test",
                 random_init=True, resolution=56, workers=0)


def error_line(res: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a refused command (and no traceback)."""
    assert res.returncode != 0, res.stdout[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    return lines[0]


def pretrain(*args: str) -> subprocess.CompletedProcess:
    """`python -m lvdtool.stages.pretrain` (what `lvd pretrain` runs) in a subprocess."""
    return subprocess.run([sys.executable, "-m", "lvdtool.stages.pretrain", *TINY_PRETRAIN, *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "LVD_QUIET": "1", "OMP_NUM_THREADS": "1"})


def tar_members(tar_path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return [m for m in tar.getmembers() if not m.name.endswith(".json")]


def rename_member(tar_path: Path, member: tarfile.TarInfo, new_name: str) -> None:
    """Rename a member in place (same length, header checksum fixed): a tar that reads cleanly."""
    assert len(new_name) == len(member.name)
    size = tar_path.stat().st_size
    with open(tar_path, "r+b") as f:
        f.seek(member.offset)
        header = bytearray(f.read(tarfile.BLOCKSIZE))
        header[:len(new_name)] = new_name.encode()
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        f.seek(member.offset)
        f.write(header)
    assert tar_path.stat().st_size == size


def flip_byte(path: Path, at: int) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 1]))
    assert path.stat().st_size == size


def flip_image_byte(images: Path) -> Path:
    """Flip one bit in the middle of the first image's data: every header and size stays right."""
    tar_path = images / "shards" / f"{SHARD}.tar"
    member = tar_members(tar_path)[0]
    flip_byte(tar_path, member.offset_data + member.size // 2)
    return tar_path


def flip_vector_byte(emb: Path) -> Path:
    """Flip one bit inside the first stored vector of an (uncompressed) embeddings shard."""
    path = emb / "shards" / f"{SHARD}.parquet"
    vector = vectors_of(pq.read_table(path), EmbeddingsArtifact(emb).dim)[0].tobytes()
    at = path.read_bytes().find(vector)
    assert at > 0
    flip_byte(path, at + 3)
    return path


def copy_of(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def rchar() -> int:
    """Bytes this process has read through read syscalls so far (Linux /proc/self/io)."""
    return int(next(ln for ln in Path("/proc/self/io").read_text().splitlines() if ln.startswith("rchar:")).split()[1])


# ---- every reader checks the members it reads --------------------------------------------------------

def test_the_stream_reader_refuses_a_member_renamed_in_place(world, tmp_path):
    bad = copy_of(world["images_a"], tmp_path / "images")
    tar_path = bad / "shards" / f"{SHARD}.tar"
    member = tar_members(tar_path)[1]
    key = member.name.rpartition(".")[0]
    renamed = "9" + member.name[1:]
    rename_member(tar_path, member, renamed)
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.tar: shard {SHARD} is damaged: its member {renamed} names key "
                                            rf"9{key[1:]}, which the index does not list"):
        list(ImagesArtifact(bad).iter_shard(SHARD))
    # what embed, probe and the report pictures read through
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.tar: .*{renamed}"):
        embed_stage.main(embed_overrides(bad, tmp_path / "emb"))
    lookup = ImageLookup(str(bad))
    with pytest.raises(ArtifactError, match=rf"{SHARD}.*{renamed}"):
        lookup.fetch([key])


def test_the_random_access_reader_refuses_a_member_renamed_in_place(world, tmp_path):
    bad = copy_of(world["images_a"], tmp_path / "images")
    tar_path = bad / "shards" / f"{SHARD}.tar"
    member = tar_members(tar_path)[1]
    key = member.name.rpartition(".")[0]
    rename_member(tar_path, member, "9" + member.name[1:])
    table = ImageTable.from_artifact(ImagesArtifact(bad))
    row = [table.key(i) for i in range(len(table))].index(key)
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.tar: .*tar header of key {key} does not match the index"):
        ImageReader(table).read(row)


def test_an_index_that_miscounts_its_shard_is_refused(world, tmp_path):
    # an index rewritten with a row less (the rows of the manifest no longer describe it)
    bad = copy_of(world["images_a"], tmp_path / "images")
    index = bad / "shards" / f"{SHARD}.parquet"
    table = pq.read_table(index)
    pq.write_table(table.slice(0, table.num_rows - 1), index)
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: {table.num_rows - 1} rows, but the manifest counts "
                                            rf"{table.num_rows} for shard {SHARD}"):
        list(ImagesArtifact(bad).iter_shard(SHARD))
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: shard {SHARD}'s files hold \d+ bytes, the "
                                            r"manifest records \d+"):
        verify_input(bad, read_manifest(bad))  # the cheap check at a stage's start, by its recorded size


def test_an_embeddings_shard_rewritten_with_fewer_rows_is_refused_before_dedup_starts(world, tmp_path):
    # with its marker: by the size recorded when it was written; copied without _work: by its row count
    for markers in (True, False):
        bad = tmp_path / f"emb_{markers}"
        shutil.copytree(world["emb_a"], bad, ignore=None if markers else shutil.ignore_patterns("_work"))
        path = bad / "shards" / f"{SHARD}.parquet"
        table = pq.read_table(path)
        pq.write_table(table.slice(1), path, compression="none")
        why = (rf"\d+ bytes, but \d+ were written for shard {SHARD}" if markers else
               rf"{table.num_rows - 1} rows, but the manifest counts {table.num_rows} for shard {SHARD}")
        out = tmp_path / f"dedup_{markers}"
        with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: {why}"):
            dedup_stage.main(sugar(embeddings=str(bad), out=str(out)) + ["k=4"])
        assert not out.exists()  # refused before the output was started


def test_a_selection_shard_that_miscounts_is_refused_by_embed_in_one_line(world, tmp_path):
    sel = copy_of(world["sel_a"], tmp_path / "sel")
    shard = sel / "shards" / f"{SHARD}.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.slice(1), shard)
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: \d+ bytes, but \d+ were written for shard {SHARD}"):
        embed_stage.main(embed_overrides(world["images_a"], tmp_path / "emb", selection=sel))
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: {table.num_rows - 1} keys but the manifest counts "
                                            rf"{table.num_rows}"):
        read_selection(sel)


def test_a_selected_key_that_is_not_an_ok_key_of_its_shard_is_refused(world, tmp_path):
    # shard S of a selection names images of shard S: a key that shard lacks is not dropped silently
    sel = copy_of(world["sel_a"], tmp_path / "sel")
    shard = sel / "shards" / f"{SHARD}.parquet"
    table = pq.read_table(shard)
    keys = table.column("key").to_pylist()
    foreign = "000000000099"
    pq.write_table(pa.table({"key": keys[:-1] + [foreign], "group": table.column("group"),
                             "reason": table.column("reason")}), shard)
    batches = ShardBatches(world["images_a"], [SHARD], lambda data: data, 4, selection_path=sel)
    with pytest.raises(InputError, match=rf"{SHARD}\.parquet: 1 of its keys are not in the ok keys of images shard "
                                         rf"{SHARD} .*first: {foreign}"):
        list(batches)


# ---- verify=full: the recorded sha256 of every input file --------------------------------------------

def test_the_cheap_check_stays_cheap_and_full_reads_every_byte(world):
    images = world["images_a"]
    manifest = read_manifest(images)
    tar_bytes = sum((images / "shards" / f"{s['name']}.tar").stat().st_size for s in manifest.shards)
    before = rchar()
    verify_input(images, manifest, "size")
    cheap = rchar() - before
    before = rchar()
    verify_input(images, manifest, "full")
    full = rchar() - before
    assert cheap < tar_bytes / 10, (cheap, tar_bytes)  # markers and Parquet footers, never the tars
    assert full >= tar_bytes
    for kind in ("emb_a", "sel_a"):  # intact artifacts of every kind pass both
        verify_input(world[kind], read_manifest(world[kind]), "full")


def test_dedup_and_curate_verify_full_refuse_a_flipped_vector_byte(world, tmp_path):
    bad = copy_of(world["emb_a"], tmp_path / "emb")
    shard = flip_vector_byte(bad)
    verify_input(bad, read_manifest(bad), "size")  # sizes and row counts are intact: the cheap check passes
    pattern = rf"{shard.name}: sha256 differs from the one recorded when shard {SHARD} was written"
    with pytest.raises(ArtifactError, match=pattern):
        dedup_stage.main(sugar(embeddings=str(bad), out=str(tmp_path / "dedup"), verify="full") + ["k=4"])
    with pytest.raises(ArtifactError, match=pattern):
        curate_stage.main(sugar(pool=str(bad), seed_paths=[str(world["emb_a"])], out=str(tmp_path / "curate"),
                                verify="full") + ["retrieval.pool_clusters=2"])
    with pytest.raises(ArtifactError, match=pattern):  # a seed set is an input too
        curate_stage.main(sugar(pool=str(world["emb_a"]), seed_paths=[str(bad)], out=str(tmp_path / "curate2"),
                                verify="full") + ["retrieval.pool_clusters=2"])


def test_pretrain_data_verify_full_refuses_a_flipped_image_byte_in_one_line(world, tmp_path):
    bad = copy_of(world["images_a"], tmp_path / "images")
    tar_path = flip_image_byte(bad)
    verify_input(bad, read_manifest(bad), "size")  # every header and size is intact
    res = pretrain(f"data.images={bad}", "data.verify=full", f"out={tmp_path / 'run'}")
    line = error_line(res)
    assert f"{tar_path}: sha256 differs from the one recorded when shard {SHARD} was written" in line


def test_verify_full_names_the_final_index_that_only_the_manifest_checksum_covers(world, tmp_path):
    # crawl-ingest writes the deduplicated index at finalisation: its sha256 is in the shard checksum only
    bad = copy_of(world["images_a"], tmp_path / "images")
    index = bad / "shards" / f"{SHARD}.parquet"
    table = pq.read_table(index)
    sources = pa.array(["x"] * table.num_rows, table.schema.field("source").type)
    pq.write_table(table.set_column(table.schema.get_field_index("source"), "source", sources), index)
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: "):
        verify_input(bad, read_manifest(bad), "size")  # another size: the cheap check names it already
    shutil.copy(world["images_a"] / "shards" / f"{SHARD}.parquet", index)
    flip_byte(index, 4)  # in the first data page, same size: only the checksum finds it
    verify_input(bad, read_manifest(bad), "size")
    with pytest.raises(ArtifactError, match=rf"{SHARD}\.parquet: sha256 does not give shard {SHARD}'s checksum"):
        verify_input(bad, read_manifest(bad), "full")


def test_a_bad_verify_value_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"verify='fast': expected size or full"):
        dedup_stage.main(sugar(embeddings="x", out="y", verify="fast"))


# ---- a selection names the images artifact its keys belong to -----------------------------------------

def test_dedup_records_the_images_its_keys_name_and_the_selection_applies_to_them(world, tmp_path):
    extra = read_manifest(world["sel_a"]).extra
    assert extra["images"] == str(world["images_a"].resolve())
    assert extra["images_fingerprint"] == read_manifest(world["images_a"]).fingerprint
    out = tmp_path / "emb"
    embed_stage.main(embed_overrides(world["images_a"], out, selection=world["sel_a"]))
    _, wanted = read_selection(world["sel_a"])
    assert set(EmbeddingsArtifact(out).keys()) == wanted


def test_embed_refuses_a_selection_of_other_images_in_one_line(world, tmp_path):
    # images B has the same shard names and keys: by key alone the selection would apply
    assert ImagesArtifact(world["images_b"]).shards == ImagesArtifact(world["images_a"]).shards
    res = lvd("embed", "--images", str(world["images_b"]), "--selection", str(world["sel_a"]), "--out",
              str(tmp_path / "emb"), *EMBED, check=False)
    line = error_line(res)
    assert str(world["sel_a"]) in line and str(world["images_a"].resolve()) in line and str(world["images_b"]) in line
    assert "its keys name other images" in line
    assert not (tmp_path / "emb" / "manifest.json").exists()


def test_pretrain_refuses_a_selection_of_other_images_in_one_line(world, tmp_path):
    res = pretrain(f"data.images={world['images_b']}", f"data.selection={world['sel_a']}", f"out={tmp_path / 'run'}")
    line = error_line(res)
    assert str(world["sel_a"]) in line and str(world["images_a"].resolve()) in line and "its keys name other images" in line


def test_curate_refuses_a_selection_of_other_images(world, tmp_path):
    # a selection recorded from images B, applied to a pool embedded from images A
    sel_b = copy_of(world["sel_a"], tmp_path / "sel_b")
    manifest = read_manifest(sel_b)
    manifest.extra.update(images=str(world["images_b"]), images_fingerprint=read_manifest(world["images_b"]).fingerprint)
    manifest.write(sel_b)
    with pytest.raises(ArtifactError, match=rf"{sel_b}: selection of images {world['images_b']} .* applied to "
                                            rf"{world['images_a'].resolve()} .*its keys name other images"):
        curate_stage.main(sugar(pool=str(world["emb_a"]), selection=str(sel_b), seed_paths=[str(world["emb_a"])],
                                out=str(tmp_path / "curate")) + ["retrieval.pool_clusters=2"])
    with pytest.raises(ArtifactError, match="its keys name other images"):  # the training table's check too
        Selection(sel_b).check_shards(ImagesArtifact(world["images_a"]).shards, world["images_a"])
    Selection(world["sel_a"]).check_shards(ImagesArtifact(world["images_a"]).shards, world["images_a"])


# ---- dedup/curate: the images index is the one that was embedded ---------------------------------------

@pytest.fixture
def reingested(world, tmp_path):
    """Embeddings of an images artifact that was then re-ingested in place (from other pictures)."""
    images = copy_of(world["images_a"], tmp_path / "images")
    emb = copy_of(world["emb_a"], tmp_path / "emb")
    manifest = read_manifest(emb)
    manifest.extra["images"] = str(images)
    manifest.inputs[0].path = str(images)
    manifest.write(emb)
    shutil.rmtree(images)
    shutil.copytree(world["images_b"], images)  # what `crawl-ingest --overwrite` of other inputs leaves
    return images, emb


def test_dedup_refuses_images_reingested_after_the_embeddings_in_one_line(reingested, tmp_path):
    images, emb = reingested
    res = lvd("dedup", "--embeddings", str(emb), "--out", str(tmp_path / "dedup"), "k=4", check=False)
    line = error_line(res)
    assert f"{images}: images artifact is not the one {emb} was embedded from" in line
    assert read_manifest(images).fingerprint in line
    assert not (tmp_path / "dedup").exists()


def test_curate_refuses_images_reingested_after_the_embeddings(world, reingested, tmp_path):
    images, emb = reingested
    with pytest.raises(ArtifactError, match=rf"{images}: images artifact is not the one {emb} was embedded from"):
        curate_stage.main(sugar(pool=str(emb), seed_paths=[str(world["emb_a"])], out=str(tmp_path / "curate"))
                          + ["retrieval.pool_clusters=2"])
    # pictures of another embeddings artifact (a benchmark, a seed set): placeholders and a note, not other images
    lookup = ImageLookup.of_embeddings(read_manifest(emb))
    assert not lookup.available and "re-ingested since" in lookup.problem
    assert lookup.fetch(["000000000000"]) == {}
    assert ImageLookup.of_embeddings(read_manifest(world["emb_a"])).fetch(["000000000000"])
