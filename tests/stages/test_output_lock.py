"""The output lock: one run per --out. A second run (a real second process) is refused naming the
holder, --overwrite cannot clear a live run's output, a dead holder's lock is taken over, ranks of one
run id share it, another host counts by its heartbeat, and a requeue (same run id) takes over."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from lvd_runner import lvd
from lvdtool.artifacts import ShardedOutput, read_manifest, shard_name
from lvdtool.artifacts.output_lock import LOCK_NAME, MEMBER_PREFIX
from lvdtool.artifacts.ranks import RankInfo
from lvdtool.errors import ArtifactError
from lvdtool.train.run_dir import prepare_run_dir, release_run_dir

HOLD_RUN_DIR = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from lvdtool.train.run_dir import prepare_run_dir
    out = Path(sys.argv[1])
    prepare_run_dir(out, {}, overwrite=False, run_id="holder-1")
    (out / "metrics.jsonl").write_text("{}\\n")
    (out.parent / "holding").write_text("1")
    time.sleep(120)
""")

RANK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from lvdtool.artifacts import ShardedOutput, shard_name
    from lvdtool.artifacts.ranks import RankInfo
    out_dir, rank, run_id = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    out = ShardedOutput(out_dir, kind="table", stage="test", config={"a": 1}, inputs=[], ranks=RankInfo(rank, 2, run_id))
    (out_dir.parent / f"joined{rank}").write_text("1")
    while not (out_dir.parent / "go").exists():
        time.sleep(0.02)
    tmp = out.temp(f"shards/{shard_name(rank)}.bin")
    tmp.write_bytes(b"r" * (rank + 1))
    out.commit(shard_name(rank), {f"shards/{shard_name(rank)}.bin": tmp}, rows=1, stats={})
    for _ in range(500):
        if out.all_done([shard_name(0), shard_name(1)]):
            break
        time.sleep(0.02)
    out.try_finalize([shard_name(0), shard_name(1)])
""")


def _wait_for(path, proc, timeout=60):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _lock_files(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".lvd-lock"))


def test_a_second_run_is_refused_overwrite_cannot_clear_it_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    env = {**os.environ, "LVD_LOCK_HEARTBEAT_S": "0.2"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RUN_DIR, str(run)], env=env, stderr=subprocess.PIPE)
    try:
        _wait_for(tmp_path / "holding", holder)
        member = run / f"{MEMBER_PREFIX}{socket.gethostname()}.{holder.pid}.json"
        beat = member.stat().st_mtime
        second = lvd("pretrain", "--images", str(tmp_path / "images"), "--out", str(run), check=False)
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert f"{run}: another lvd pretrain run holds it (pid {holder.pid} on {socket.gethostname()}, started " in second.stderr
        assert "s ago); wait for it, stop it, or choose another --out" in second.stderr
        with pytest.raises(ArtifactError, match="another lvd pretrain run holds it"):
            prepare_run_dir(run, {}, overwrite=True, run_id="other")
        assert (run / "metrics.jsonl").read_text() == "{}\n", "--overwrite did not touch the live run's files"
        assert member.stat().st_mtime > beat, "the holder's heartbeat touches its member file"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    capsys.readouterr()
    prepare_run_dir(run, {}, overwrite=False, run_id="after")  # the holder is dead: taken over
    assert "breaking a stale lock: its lvd pretrain run (run id holder-1" in capsys.readouterr().err
    assert json.loads((run / LOCK_NAME).read_text())["run_id"] == "after"
    assert not member.exists(), "the dead run's member file is removed"
    release_run_dir(run)
    assert _lock_files(run) == []


@pytest.mark.parametrize("run_ids", [("launch-7", "launch-7"), ("ppid100", "ppid200")], ids=["one-run-id", "per-node-ids"])
def test_two_ranks_of_one_launch_share_the_output_and_the_last_removes_the_lock(tmp_path, run_ids):
    # per-node-ids: multi-node torchrun gives each node's ranks their own run id; the same command
    # at the same world size is recognised as the same launch
    out = tmp_path / "art"
    ranks = []
    for r in (0, 1):
        ranks.append(subprocess.Popen([sys.executable, "-c", RANK, str(out), str(r), run_ids[r]], stderr=subprocess.PIPE))
        _wait_for(tmp_path / f"joined{r}", ranks[-1])
    try:
        assert len([n for n in _lock_files(out) if n.startswith(MEMBER_PREFIX)]) == 2, "both ranks are members"
        assert json.loads((out / LOCK_NAME).read_text())["run_id"] == run_ids[0]
        for other in (RankInfo(0, 1, "launch-8"), RankInfo(1, 3, "launch-8")):  # another launch (world size)
            with pytest.raises(ArtifactError, match=r"another lvd test run holds it \(pid \d+ on "):
                ShardedOutput(out, kind="table", stage="test", config={"a": 1}, inputs=[], ranks=other)
        (tmp_path / "go").write_text("1")
        for proc in ranks:
            assert proc.wait(60) == 0, proc.stderr.read().decode()
    finally:
        for proc in ranks:
            proc.kill()
    assert read_manifest(out).complete and len(read_manifest(out).shards) == 2
    assert _lock_files(out) == [], "the last rank to leave removed the lock"


def _remote_lock(out, run_id, heartbeat):
    out.mkdir(parents=True, exist_ok=True)
    record = {"host": "elsewhere.invalid", "pid": 4242, "start_ticks": None, "taken_at": time.time() - 1000,
              "run_id": run_id, "stage": "test"}
    for path in (out / LOCK_NAME, out / f"{MEMBER_PREFIX}elsewhere.invalid.4242.json"):
        path.write_text(json.dumps(record))
        os.utime(path, (heartbeat, heartbeat))


def test_another_hosts_run_counts_by_its_heartbeat_and_a_requeue_takes_over(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LVD_LOCK_STALE_S", "60")
    out = tmp_path / "art"
    open_as = lambda run_id: ShardedOutput(out, kind="table", stage="test", config={}, inputs=[],  # noqa: E731
                                           ranks=RankInfo(0, 1, run_id))
    _remote_lock(out, "slurm42.0", heartbeat=time.time() - 5)
    with pytest.raises(ArtifactError, match=r"another lvd test run holds it \(pid 4242 on elsewhere.invalid, .*heartbeat [56] s ago\)"):
        open_as("other")
    requeued = open_as("slurm42.0")  # a SLURM requeue repeats the run id: it takes over at once
    assert json.loads((out / LOCK_NAME).read_text())["run_id"] == "slurm42.0"
    requeued.release()
    _remote_lock(out, "slurm42.0", heartbeat=time.time() - 120)  # silent for longer than LVD_LOCK_STALE_S
    capsys.readouterr()
    taken = open_as("other")
    assert "breaking a stale lock" in capsys.readouterr().err
    assert json.loads((out / LOCK_NAME).read_text())["run_id"] == "other"
    assert f"{MEMBER_PREFIX}elsewhere.invalid.4242.json" not in _lock_files(out)
    taken.release()
    assert _lock_files(out) == []
