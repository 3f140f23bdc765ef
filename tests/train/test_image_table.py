"""The training table: offsets from the shard index (no tar reading), sidecars for older artifacts,
a memory-mapped table that loads in well under a second at 2M rows, a bounded per-row budget."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lvdtool.artifacts import ImagesArtifact, Manifest
from lvdtool.artifacts.selection import Selection
from lvdtool.data.image_table import ImageTable, build_table, cached_table, distributed_table, sidecar_path
from lvdtool.errors import ArtifactError

from synthetic_images import write_images_artifact

LVD = str(Path(sys.executable).with_name("lvd"))


def same_table(a: ImageTable, b: ImageTable) -> bool:
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ("keys", "shard_ids", "offsets", "sizes"))


def test_ingest_records_the_offsets_the_tar_headers_give(digits_images, tmp_path):
    """crawl-ingest's index offsets are what a scan of the tar headers finds; the build never reads a tar."""
    art = ImagesArtifact(digits_images)
    from_index = build_table(art, scan_tars=False)
    streamed = {s.key: s.data for s in art.iter_samples()}
    assert len(from_index) == len(streamed) == 60
    assert from_index.bytes_per_row == 28 and from_index.keys.dtype.itemsize == 12
    with open(from_index.shard_paths[0], "rb") as f:
        for row in np.flatnonzero(from_index.shard_ids == 0)[:5]:
            f.seek(int(from_index.offsets[row]))
            assert f.read(int(from_index.sizes[row])) == streamed[from_index.key(row)]


def test_an_artifact_without_offsets_is_refused_by_name_then_indexed_by_the_command(tmp_path):
    images = write_images_artifact(tmp_path / "old", shards=6, per_shard=5, failed_every=4, offsets=False)
    art = ImagesArtifact(images)
    with pytest.raises(ArtifactError, match=r"shard-000000.parquet: shard shard-000000 has no recorded image offsets.*lvd index-offsets"):
        build_table(art, scan_tars=False)
    scanned = build_table(art, scan_tars=True)  # the fallback reads the tar headers
    env = {**os.environ, "LVD_QUIET": "1"}
    done = [subprocess.run([LVD, "index-offsets", "--images", str(images)], env={**env, "RANK": str(r), "WORLD_SIZE": "2"},
                           capture_output=True, text=True, timeout=120) for r in (0, 1)]  # two ranks split the shards
    assert all(p.returncode == 0 for p in done), [p.stderr for p in done]
    assert all(sidecar_path(art, s).exists() for s in art.shards)
    assert same_table(build_table(art, scan_tars=False), scanned)
    assert len(scanned) == 6 * 5 - 8  # every 4th record failed
    again = subprocess.run([LVD, "index-offsets", "--images", str(images)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert re.search(r"sidecar already written\W+6\b", again.stdout + again.stderr)


def test_a_selection_filters_shard_by_shard(tmp_path):
    images = write_images_artifact(tmp_path / "img", shards=5, per_shard=8, tars=False)
    art = ImagesArtifact(images)
    chosen = {s: [f"{p:012d}" for p in range(i * 8, (i + 1) * 8) if p % 3 == 0] for i, s in enumerate(art.shards)}
    sel = tmp_path / "sel"
    (sel / "shards").mkdir(parents=True)
    for shard, keys in chosen.items():
        pq.write_table(__import__("pyarrow").table({"key": keys[::-1]}), sel / "shards" / f"{shard}.parquet")
    Manifest(kind="selection", stage="test", config={}, shards=[{"name": s, "rows": len(k)} for s, k in chosen.items()],
             complete=True).write(sel)
    table = build_table(art, Selection(sel), scan_tars=False)
    assert [table.key(i) for i in range(len(table))] == sorted(k for ks in chosen.values() for k in ks)
    assert table.shard_ids.tolist() == [i for i, ks in enumerate(chosen.values()) for _ in ks]
    # A hand-made selection with shards named otherwise: the same keys, joined against all of them at once.
    other = tmp_path / "other"
    (other / "shards").mkdir(parents=True)
    pq.write_table(__import__("pyarrow").table({"key": [k for ks in chosen.values() for k in ks][::-1]}),
                   other / "shards" / "picked-000000.parquet")
    Manifest(kind="selection", stage="test", config={}, shards=[{"name": "picked-000000", "rows": len(table)}],
             complete=True).write(other)
    assert same_table(build_table(art, Selection(other), scan_tars=False), table)


def test_two_million_rows_over_2000_shards_map_in_under_a_second(tmp_path):
    """Built once from the indexes (the tars do not even exist), then every start maps the saved
    table: the load is a few file opens whatever N is."""
    images = write_images_artifact(tmp_path / "big", shards=2000, per_shard=1000, tars=False)
    art = ImagesArtifact(images)
    started = time.perf_counter()
    table = cached_table(art, None, tmp_path / "run" / "data_table", "fp1", build=True, scan_tars=False)
    build_seconds = time.perf_counter() - started
    assert len(table) == 2_000_000 and isinstance(table.keys, np.memmap)
    started = time.perf_counter()
    again = cached_table(art, None, tmp_path / "run" / "data_table", "fp1", build=False)
    load_seconds = time.perf_counter() - started
    assert load_seconds < 1.0, f"mapping the saved table took {load_seconds:.2f} s"
    assert again.key(1_234_567) == "000001234567" and int(again.shard_ids[1_234_567]) == 1234
    assert int(again.offsets[999]) == 1536 * 999
    print(f"2M rows / 2000 shards: build {build_seconds:.2f} s, load {load_seconds * 1000:.1f} ms")
    with pytest.raises(ArtifactError, match="no training table for these inputs"):
        cached_table(art, None, tmp_path / "run" / "data_table", "other inputs", build=False)


def test_the_build_holds_about_28_bytes_per_row_and_no_python_object_per_row(tmp_path):
    """tracemalloc peaks of the build at 5e4, 1e5 and 2e5 rows in shards of 1,000, in a fresh process
    (threads left over by other tests would count): the table holds 28 B/row and the build's peak
    grows by at most 36 B/row (the shards in flight are bounded: a few shards' arrays, whatever N)."""
    for n in (50_000, 100_000, 200_000):
        write_images_artifact(tmp_path / f"n{n}", shards=n // 1000, per_shard=1000, tars=False)
    code = (
        "import sys, tracemalloc, json; from lvdtool.artifacts import ImagesArtifact;"
        "from lvdtool.data.image_table import build_table; peaks = {}\n"
        "for n in (50_000, 100_000, 200_000):\n"
        "    art = ImagesArtifact(f'{sys.argv[1]}/n{n}'); tracemalloc.start(); t = build_table(art, scan_tars=False)\n"
        "    peaks[n] = tracemalloc.get_traced_memory()[1]; tracemalloc.stop(); assert len(t) == n; del t\n"
        "print(json.dumps(peaks))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peaks = {int(k): v for k, v in __import__("json").loads(proc.stdout).items()}
    slope = (peaks[200_000] - peaks[50_000]) / 150_000
    # the table itself is 28 B/row; the build's peak adds the shards being read and NumPy's
    # temporaries (29-34 B/row measured, warm or cold process), never a second copy of the table
    assert slope <= 36, f"{slope:.1f} bytes per row (peaks {peaks})"
    assert peaks[200_000] <= 36 * 200_000 + 2_000_000


def test_a_loader_under_a_128_file_limit_reads_300_shards(tmp_path):
    """One image per shard, 300 shards, RLIMIT_NOFILE 128: the reader's bound keeps the loader
    running through a whole epoch; the same process with an unbounded reader fails."""
    images = write_images_artifact(tmp_path / "many", shards=300, per_shard=1)
    code = (
        "import resource, sys, itertools; from lvdtool.artifacts import ImagesArtifact;"
        "from lvdtool.data.image_table import build_table; from lvdtool.data import pretrain_loader as pl;"
        "from lvdtool.data.augment import MultiCropAugment, MultiCropConfig; from lvdtool.data.sampler import DataCursor;"
        "from lvdtool.ssl.masking import BatchMaskSampler;"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128));"
        "t = build_table(ImagesArtifact(sys.argv[1]), scan_tars=False);"
        "aug = MultiCropAugment(MultiCropConfig(global_crops_size=16, local_crops_size=8, n_local_crops=1));"
        "ds = pl.PretrainBatches(t, aug, BatchMaskSampler((2, 2)), 0, None); ds.reader = pl.ImageReader(t, int(sys.argv[2]));"
        "loader, _ = pl.build_pretrain_loader(ds, 50, 0, 1, DataCursor(), workers=0);"
        "n = sum(b['global_crops'].shape[0] for b in itertools.islice(loader, 6)); print(n, ds.reader.open_files())"
    )
    run = lambda max_open: subprocess.run([sys.executable, "-c", code, str(images), str(max_open)],  # noqa: E731
                                          capture_output=True, text=True, timeout=300)
    bounded = run(64)
    assert bounded.returncode == 0, bounded.stderr[-2000:]
    assert bounded.stdout.split() == ["600", "64"]  # 6 batches x 50 images x 2 global crops
    unbounded = run(1000)
    assert unbounded.returncode != 0 and "Too many open files" in unbounded.stderr


def test_a_run_killed_before_its_first_checkpoint_is_resumed_not_refused(tmp_path):
    """The table is written at start, before the run's manifest: the same command must still resume
    (a folder with anything else in it is still refused)."""
    from lvdtool.errors import ArtifactError as Refused
    from lvdtool.train.run_dir import prepare_run_dir

    run = tmp_path / "run"
    (run / "data_table").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    prepare_run_dir(run, {}, overwrite=False)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(Refused, match=r"exists and holds 1 entry that is not an lvd pretrain run \(notes.txt\)"):
        prepare_run_dir(run, {}, overwrite=False)


def _table_rank(rank: int, world: int, port: int, folder: str) -> None:
    import torch
    import torch.distributed as dist

    from lvdtool.train.distributed import DistEnv

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    env = DistEnv(rank, world, 0, torch.device("cpu"), owns_group=False)
    root = Path(folder)
    try:
        art = ImagesArtifact(root / "img")
        table = distributed_table(art, Selection(root / "sel"), root / "run" / "data_table", "fp", rank, world,
                                  env.run_on_all, env.run_on_main, scan_tars=False)
        np.save(root / f"keys_{rank}.npy", np.asarray(table.keys))
        np.save(root / f"offsets_{rank}.npy", np.asarray(table.offsets))
        broken = ImagesArtifact(root / "broken")
        try:
            distributed_table(broken, None, root / "run2" / "data_table", "fp", rank, world, env.run_on_all,
                              env.run_on_main, scan_tars=False)
        except ArtifactError as exc:
            (root / f"error_{rank}.txt").write_text(str(exc))
    finally:
        dist.destroy_process_group()


def test_three_gloo_ranks_build_the_table_rank_split_equal_to_one_process(tmp_path):
    """Each rank reads the indexes of its shards, rank 0 merges: the table equals the one-process
    build; a missing index on one rank's shard fails every rank with the same one-line error."""
    import shutil
    import socket

    import pyarrow as pa
    import torch.multiprocessing as mp

    images = write_images_artifact(tmp_path / "img", shards=7, per_shard=9, tars=False, failed_every=5)
    art = ImagesArtifact(images)
    sel = tmp_path / "sel"
    (sel / "shards").mkdir(parents=True)
    rows = []
    for i, shard in enumerate(art.shards):
        # even ok keys (every 5th record failed): a selection names images that exist
        keys = [f"{p:012d}" for p in range(i * 9, (i + 1) * 9) if p % 2 == 0 and p % 5 != 0]
        pq.write_table(pa.table({"key": keys}), sel / "shards" / f"{shard}.parquet")
        rows.append({"name": shard, "rows": len(keys)})
    Manifest(kind="selection", stage="test", config={}, shards=rows, complete=True).write(sel)
    shutil.copytree(images, tmp_path / "broken")
    (tmp_path / "broken" / "shards" / "shard-000004.parquet").unlink()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_table_rank, args=(3, port, str(tmp_path)), nprocs=3, join=True)
    expected = build_table(art, Selection(sel), scan_tars=False)
    assert len(expected) == sum(1 for p in range(63) if p % 2 == 0 and p % 5 != 0)
    for rank in range(3):
        assert np.array_equal(np.load(tmp_path / f"keys_{rank}.npy"), expected.keys)
        assert np.array_equal(np.load(tmp_path / f"offsets_{rank}.npy"), expected.offsets)
        assert "shard-000004.parquet: index of shard shard-000004 is missing" in (tmp_path / f"error_{rank}.txt").read_text()
    assert not list((tmp_path / "run").glob(".data_table.parts-*")), "the rank parts are removed after the merge"


def test_a_rank_part_left_by_a_killed_build_is_reused(tmp_path):
    """A kill after some ranks saved their parts: the rerun keeps those (mtime unchanged) and the
    merged table equals the one-process build."""
    from lvdtool.data.image_table import parts_dir, save_part

    images = write_images_artifact(tmp_path / "img", shards=5, per_shard=7, tars=False, failed_every=3)
    art = ImagesArtifact(images)
    directory = tmp_path / "run" / "data_table"
    parts = parts_dir(directory, "fp")
    first = save_part(art, None, parts, 0, 2, scan_tars=False)  # rank 0 finished before the kill
    stamp = first.stat().st_mtime_ns
    calls = []

    def save_rank_parts(fn):  # what run_on_all does across 2 ranks: rank 0's call, then rank 1's
        calls.append(save_part(art, None, parts, 0, 2, scan_tars=False).stat().st_mtime_ns)
        save_part(art, None, parts, 1, 2, scan_tars=False)

    table = distributed_table(art, None, directory, "fp", 0, 2, save_rank_parts, lambda fn: fn(), scan_tars=False)
    assert calls == [stamp], "rank 0's saved part was rebuilt"
    assert same_table(table, build_table(art, scan_tars=False)) and len(table) == 35 - 12
    assert not parts.exists()
