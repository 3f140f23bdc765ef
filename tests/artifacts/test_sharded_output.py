"""The artifact layer: atomic commit, resume, rank split, one final manifest, config checks."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from lvdtool.artifacts import InputRef, ShardedOutput, rank_info, read_manifest, shard_name
from lvdtool.artifacts.ranks import RankInfo
from lvdtool.errors import ArtifactError, ConfigError

INPUTS = [InputRef(path="/x/urls.txt", kind="urls", fingerprint="sha256:abc")]


def _write_shard(out: ShardedOutput, i: int, payload: bytes) -> None:
    name = shard_name(i)
    tmp = out.temp(f"shards/{name}.bin")
    tmp.write_bytes(payload)
    out.commit(name, {f"shards/{name}.bin": tmp}, rows=len(payload), stats={"status": {"ok": len(payload)}})


def _out(tmp_path: Path, **kw) -> ShardedOutput:
    return ShardedOutput(tmp_path / "art", kind="table", stage="test", config={"a": 1, "threads": 2}, inputs=INPUTS, **kw)


def test_commit_then_finalize_writes_complete_manifest(tmp_path):
    out = _out(tmp_path, ranks=RankInfo(0, 1, "r1"))
    assert read_manifest(out.dir).complete is False
    names = [shard_name(i) for i in range(3)]
    for i in range(3):
        assert not out.is_done(names[i])
        _write_shard(out, i, b"x" * (i + 1))
        assert out.is_done(names[i])
    assert out.try_finalize(names)
    m = read_manifest(out.dir)
    assert m.complete and [s["name"] for s in m.shards] == names
    assert m.stats["status"]["ok"] == 6
    assert m.fingerprint.startswith("shards:")
    assert not list(out.dir.rglob("*.tmp-*")), "temporary files must not survive a commit"


def test_finalize_refuses_until_all_shards_done(tmp_path):
    out = _out(tmp_path, ranks=RankInfo(0, 1, "r1"))
    _write_shard(out, 0, b"a")
    assert not out.try_finalize([shard_name(0), shard_name(1)])
    assert not read_manifest(out.dir).complete


def test_truncated_file_makes_shard_undone(tmp_path):
    out = _out(tmp_path, ranks=RankInfo(0, 1, "r1"))
    _write_shard(out, 0, b"abcdef")
    p = out.dir / "shards" / f"{shard_name(0)}.bin"
    p.write_bytes(b"abc")
    assert not out.is_done(shard_name(0))
    p.write_bytes(b"abcdeX")  # same size, other bytes: only the full check sees it
    assert out.is_done(shard_name(0))
    assert not out.is_done(shard_name(0), verify="full")


def test_rerun_with_other_config_is_refused_naming_the_key(tmp_path):
    _out(tmp_path, ranks=RankInfo(0, 1, "r1"))
    with pytest.raises(ConfigError, match=r"differs at: config\.a"):
        ShardedOutput(tmp_path / "art", kind="table", stage="test", config={"a": 2, "threads": 2}, inputs=INPUTS,
                      ranks=RankInfo(0, 1, "r2"))
    # ignored keys (worker counts) may change between runs
    ShardedOutput(tmp_path / "art", kind="table", stage="test", config={"a": 1, "threads": 8}, inputs=INPUTS,
                  ranks=RankInfo(0, 1, "r3"), resume_ignores=("threads",))


def test_stale_temp_files_are_swept_on_single_process_restart(tmp_path):
    out = _out(tmp_path, ranks=RankInfo(0, 1, "r1"))
    stale = out.temp("shards/shard-000000.bin")
    stale.write_bytes(b"partial")
    _out(tmp_path, ranks=RankInfo(0, 1, "r2"))
    assert not stale.exists()


def test_wrong_kind_directory_is_refused(tmp_path):
    _out(tmp_path, ranks=RankInfo(0, 1, "r1"))
    with pytest.raises(ArtifactError, match="holds a 'table' artifact"):
        ShardedOutput(tmp_path / "art", kind="images", stage="crawl-ingest", config={}, inputs=INPUTS)


def _rank_worker(root: str, rank: int, world: int, n_shards: int, q) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LVD_RUN_ID="launch1")
    out = ShardedOutput(Path(root) / "art", kind="table", stage="test", config={"a": 1, "threads": 2}, inputs=INPUTS)
    mine = [i for i in range(n_shards) if out.owns(i)]
    for i in mine:
        _write_shard(out, i, bytes([i]) * 10)
    q.put((rank, mine, out.try_finalize([shard_name(i) for i in range(n_shards)])))


def test_two_ranks_split_shards_and_write_the_manifest_once(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_rank_worker, args=(str(tmp_path), r, 2, 5, q)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = sorted(q.get() for _ in procs)
    assert results[0][1] == [0, 2, 4] and results[1][1] == [1, 3]
    assert sum(r[2] for r in results) == 1, "exactly one rank writes the final manifest"
    m = read_manifest(tmp_path / "art")
    assert m.complete and len(m.shards) == 5 and m.stats["status"]["ok"] == 50


def test_rank_info_reads_torchrun_and_slurm(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "LVD_RUN_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    assert rank_info().world_size == 1
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    info = rank_info()
    assert (info.rank, info.world_size) == (3, 4) and info.run_id.startswith("slurm77")
    assert info.owns(7) and not info.owns(8)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="invalid rank 5"):
        rank_info()


def test_unreadable_manifest_names_the_file(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"bad/manifest.json: unreadable manifest"):
        read_manifest(d)
    (d / "manifest.json").write_text(json.dumps({"stage": "x"}))
    with pytest.raises(ArtifactError, match="lacks the key 'kind'"):
        read_manifest(d)
