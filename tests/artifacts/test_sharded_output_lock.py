"""The finalize lock under a SLURM requeue: a killed finalize's lock (same run id) must not block the rerun."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from lvdtool.artifacts import InputRef, ShardedOutput, read_manifest, shard_name
from lvdtool.artifacts.ranks import RankInfo
from lvdtool.artifacts.run_lock import acquire, stale_reason

INPUTS = [InputRef(path="/x/urls.txt", kind="urls", fingerprint="sha256:abc")]
RUN_ID = "slurm4242.0"  # what a requeued SLURM job sees again

# A rank that writes its shards, then is killed inside finalize while it holds the lock.
_KILLED_FINALIZE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from lvdtool.artifacts import InputRef, ShardedOutput, shard_name
    from lvdtool.artifacts.ranks import RankInfo
    root = Path(sys.argv[1])
    out = ShardedOutput(root, kind="table", stage="test", config={"a": 1}, inputs=[InputRef("/x/urls.txt", "urls", "sha256:abc")],
                        ranks=RankInfo(0, 1, sys.argv[2]))
    for i in range(2):
        tmp = out.temp(f"shards/{shard_name(i)}.bin")
        tmp.write_bytes(b"x" * (i + 1))
        out.commit(shard_name(i), {f"shards/{shard_name(i)}.bin": tmp}, rows=i + 1, stats={})
    def finalize(records):
        (root / "in_finalize").write_text("1")
        time.sleep(120)
        return {}
    out.try_finalize([shard_name(0), shard_name(1)], finalize=finalize)
""")


def _out(root: Path, run_id: str = RUN_ID, **kw) -> ShardedOutput:
    return ShardedOutput(root, kind="table", stage="test", config={"a": 1}, inputs=INPUTS, ranks=RankInfo(0, 1, run_id), **kw)


def _kill_inside_finalize(root: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_FINALIZE, str(root), RUN_ID], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (root / "in_finalize").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode() if proc.poll() is not None else "timeout"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_requeue_with_the_same_run_id_finalizes(tmp_path, capsys):
    root = tmp_path / "art"
    _kill_inside_finalize(root)
    lock = root / f".finalize-{RUN_ID}.lock"
    assert lock.exists() and not read_manifest(root).complete, "the kill left the lock of this run id behind"
    held = json.loads(lock.read_text())
    assert held["host"] == socket.gethostname() and held["pid"] > 0
    out = _out(root)
    assert out.try_finalize([shard_name(0), shard_name(1)]), "the requeued launch must finalise"
    assert read_manifest(root).complete
    assert "breaking a stale lock" in capsys.readouterr().err
    assert not list(root.glob(".finalize-*.lock.broken-*")), "the broken lock is removed"


def test_a_live_holder_keeps_the_lock_and_an_old_one_loses_it(tmp_path, capsys):
    lock = tmp_path / "x.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "start_ticks": None, "taken_at": time.time()}))
        assert not acquire(lock, timeout_s=3600), "a running holder on this host keeps its lock"
        assert stale_reason(lock, 3600) is None
        assert "took it over 10 s ago" in stale_reason(lock, 10, now=time.time() + 11)
        # another host cannot be probed: only the age counts
        lock.write_text(json.dumps({"host": "elsewhere.invalid", "pid": 1, "start_ticks": None, "taken_at": time.time() - 100}))
        assert not acquire(lock, timeout_s=3600)
        assert acquire(lock, timeout_s=50), "older than the timeout: broken"
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "elsewhere.invalid" in capsys.readouterr().err, "the broken lock's holder is named in the message"


def test_a_recycled_pid_does_not_hold_the_lock(tmp_path):
    lock = tmp_path / "x.lock"
    # our own pid, but another process start time: the holder died and the pid was reused
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": 1, "taken_at": time.time()}))
    assert "no longer running" in (stale_reason(lock, 3600) or "")
    assert acquire(lock)
    lock.write_text("")  # killed between create and write: judged by the file's age
    assert stale_reason(lock, 3600) is None and "unreadable" in stale_reason(lock, 10, now=time.time() + 20)


def test_a_lock_whose_temp_file_is_swept_away_mid_creation_is_still_taken(tmp_path, monkeypatch):
    # Another rank's finalize sweeps the folder's temporary files; it once caught a lock's temp
    # between its write and its link (FileNotFoundError in CI). The lock must be retaken, not crash.
    lock = tmp_path / ".finalize-x.lock"
    real_link, calls = os.link, []

    def link_after_a_sweep(src, dst):
        calls.append(src)
        if len(calls) == 1:
            Path(src).unlink()  # what remove_stale_temps does to files with the temp mark
        return real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_a_sweep)
    assert acquire(lock)
    assert len(calls) == 2
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == [lock.name]  # no temp left behind
