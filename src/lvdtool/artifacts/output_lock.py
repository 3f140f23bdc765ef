"""The exclusive lock on one output (`--out`), held for the whole run.

`<out>/.lvd-lock.json` names the run that holds the output: its run id (shared by every rank of
one launch, repeated by a SLURM requeue), its stage and the process that took it. Each process of
that run that works in the output adds a member file `<out>/.lvd-lock-member.<host>.<pid>.json`;
a daemon thread touches it (and the lock) every LVD_LOCK_HEARTBEAT_S seconds (30).

A run with another run id is refused while any member is alive: on this host, while its pid runs
(with its start time, so a recycled pid does not count); on another host, while its heartbeat is
younger than LVD_LOCK_STALE_S seconds (300). A lock whose members are all dead is broken, with a
printed line. The same run id joins (the other ranks, a requeue taking over), and so does a later
run in the very process that holds it (in-process runs follow each other), and a rank of a
multi-rank launch whose ranks got different run ids but run the same command (`peer`). The last member to
leave removes the lock.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lvdtool.artifacts import run_lock
from lvdtool.artifacts.run_lock import LockHolder
from lvdtool.errors import ArtifactError

LOCK_NAME = ".lvd-lock.json"
MEMBER_PREFIX = ".lvd-lock-member."
HEARTBEAT_ENV, STALE_ENV = "LVD_LOCK_HEARTBEAT_S", "LVD_LOCK_STALE_S"
DEFAULT_HEARTBEAT_S, DEFAULT_STALE_S = 30.0, 300.0


def is_lock_entry(name: str) -> bool:
    """The lock's own files (and their temporary and broken-aside names) inside an output."""
    return name.startswith(".lvd-lock")


def _seconds(env: str, default: float) -> float:
    try:
        return float(os.environ.get(env) or default)
    except ValueError:
        return default


@dataclass(frozen=True)
class Participant:
    """The lock file or a member file, as read."""

    path: Path
    run_id: str
    stage: str
    holder: LockHolder
    heartbeat: float  # the file's mtime, touched by the holder's heartbeat thread
    peer: str | None = None  # what ranks of one launch without a shared run id have in common

    def alive(self, now: float, stale_s: float) -> bool:
        if self.holder.host == socket.gethostname():
            return run_lock.alive(self.holder)
        return now - self.heartbeat <= stale_s

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.holder.taken_at))
        return (f"pid {self.holder.pid} on {self.holder.host}, started {started}, "
                f"heartbeat {max(0.0, now - self.heartbeat):.0f} s ago")


def _read(path: Path) -> Participant | None:
    try:
        raw = path.read_text()
        mtime = path.stat().st_mtime
        d = json.loads(raw)
        holder = LockHolder(host=str(d["host"]), pid=int(d["pid"]), start_ticks=d.get("start_ticks"),
                            taken_at=float(d["taken_at"]))
        return Participant(path, str(d["run_id"]), str(d.get("stage", "?")), holder, mtime, d.get("peer"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _members(out: Path) -> list[Participant]:
    found = (_read(p) for p in out.glob(f"{MEMBER_PREFIX}*.json"))
    return [m for m in found if m is not None]


def _is_me(p: Participant) -> bool:
    return p.holder.host == socket.gethostname() and p.holder.pid == os.getpid()


class OutputLock:
    """This process's share of the lock on one output; `release()` when the run ends."""

    def __init__(self, out: Path, run_id: str, stage: str, peer: str | None = None) -> None:
        self.out, self.run_id, self.stage, self.peer = out, run_id, stage, peer
        self.lock_path = out / LOCK_NAME
        self.member_path = out / f"{MEMBER_PREFIX}{socket.gethostname()}.{os.getpid()}.json"
        self.count = 0
        self.pid = os.getpid()  # a forked child (a DataLoader worker) inherits this object but not the hold

    def _record(self) -> dict:
        return {"run_id": self.run_id, "stage": self.stage, "peer": self.peer}

    def _take(self) -> None:
        stale_s = _seconds(STALE_ENV, DEFAULT_STALE_S)
        for _ in range(20):
            if run_lock.create(self.lock_path, LockHolder.me(), self._record()):
                break
            current = _read(self.lock_path)
            now = time.time()
            if current is None:  # being written, or left unreadable by a kill between create and write
                try:
                    age = now - self.lock_path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > stale_s:
                    try:
                        seen = self.lock_path.read_bytes()
                    except FileNotFoundError:
                        continue
                    run_lock.break_lock(self.lock_path, seen, f"unreadable, {age:.0f} s old")
                else:
                    time.sleep(0.05)
                continue
            if current.run_id == self.run_id or _is_me(current):
                break  # another rank of this launch, a requeue of it, or an earlier run of this process
            if self.peer is not None and current.peer == self.peer:
                self.run_id = current.run_id  # a rank of the same launch that got another run id
                break
            holders = [current] + [m for m in _members(self.out) if m.run_id == current.run_id]
            live = [p for p in holders if p.alive(now, stale_s)]
            if live:
                raise ArtifactError(
                    f"{self.out}: another lvd {current.stage} run holds it ({live[0].describe(now)}); "
                    "wait for it, stop it, or choose another --out")
            reason = f"its lvd {current.stage} run (run id {current.run_id}, {current.describe(now)}) is no longer running"
            if run_lock.break_lock(self.lock_path, current.path.read_bytes() if current.path.exists() else b"", reason):
                for m in holders[1:]:
                    m.path.unlink(missing_ok=True)
        else:
            raise ArtifactError(f"{self.out}: could not take the output lock {LOCK_NAME} (it kept changing hands)")
        self._write_member()
        for m in _members(self.out):  # members of this run id that died (a requeue's killed ranks)
            if m.run_id == self.run_id and not _is_me(m) and not m.alive(time.time(), stale_s):
                m.path.unlink(missing_ok=True)

    def _write_member(self) -> None:
        tmp = self.member_path.with_name(self.member_path.name + ".new")
        tmp.write_text(json.dumps({**vars(LockHolder.me()), **self._record()}) + "\n")
        os.replace(tmp, self.member_path)

    def beat(self) -> None:
        """The heartbeat: touch the member file and the lock; retake a lock that vanished (the
        last other member left just as this one joined)."""
        try:
            os.utime(self.member_path)
        except FileNotFoundError:
            self._write_member()
        try:
            os.utime(self.lock_path)
        except FileNotFoundError:
            run_lock.create(self.lock_path, LockHolder.me(), self._record())

    def release(self) -> None:
        if os.getpid() != self.pid:
            return
        with _LOCK:
            self.count -= 1
            if self.count > 0:
                return
            _HELD.pop(self.out, None)
        self.member_path.unlink(missing_ok=True)
        now, stale_s = time.time(), _seconds(STALE_ENV, DEFAULT_STALE_S)
        if any(m.run_id == self.run_id and m.alive(now, stale_s) for m in _members(self.out)):
            return  # other ranks of this run still work here
        current = _read(self.lock_path)
        if current is not None and (current.run_id == self.run_id or _is_me(current)):
            self.lock_path.unlink(missing_ok=True)


_LOCK = threading.Lock()
_HELD: dict[Path, OutputLock] = {}
_BEAT: threading.Thread | None = None


def _heartbeat() -> None:
    while True:
        time.sleep(_seconds(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S))
        with _LOCK:
            held = list(_HELD.values())
        for lock in held:
            try:
                lock.beat()
            except OSError as exc:  # the output vanished or the disk is gone: say so, keep running
                print(f"{lock.out}: output lock heartbeat failed ({exc})", file=sys.stderr)


def acquire(out: str | os.PathLike, run_id: str, stage: str, peer: str | None = None) -> OutputLock:
    """Take (or join) the lock on the existing folder `out`; an ArtifactError naming the holder
    while another live run has it. `peer`: ranks that may not share a run id (multi-node torchrun
    gives each node its own, ranks started by hand) pass what makes them one launch (the world size
    and the config and inputs) and join a holder with the same."""
    key = Path(os.path.realpath(out))
    global _BEAT
    with _LOCK:
        lock = _HELD.get(key)
        if lock is None:
            lock = OutputLock(key, run_id, stage, peer)
            lock._take()
            _HELD[key] = lock
            if _BEAT is None:
                _BEAT = threading.Thread(target=_heartbeat, name="lvd-output-lock-heartbeat", daemon=True)
                _BEAT.start()
        lock.count += 1
        return lock


def held_by_this_process(out: str | os.PathLike) -> OutputLock | None:
    return _HELD.get(Path(os.path.realpath(out)))


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.count = 1
        lock.release()
