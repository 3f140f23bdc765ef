"""An exclusive lock file that a killed holder cannot leave behind for ever.

The lock file is created atomically with its content (written to a temp name, then hard-linked
into place, which fails if the lock exists) and says who holds it: host, pid, the process's start
time (so a recycled pid is not mistaken for the holder) and the wall-clock time it was taken.
A lock is stale, and is broken with a printed message, when its holder ran on this host and is
no longer alive, or when it is older than `timeout_s` (a holder on another host cannot be
checked; a finalize that holds the lock does only short work, so one hour is generous).
A SLURM requeue repeats the run id, so the lock of a killed launch has the name a new one wants.
The output lock (output_lock.py) is built from the same pieces: `create`, `alive`, `break_lock`.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lvdtool.artifacts.atomic import TMP_MARK

DEFAULT_TIMEOUT_S = 3600.0


def _proc_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22, after the command name
    except (ValueError, IndexError):
        return None


def _alive(pid: int, start_ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    if start_ticks is not None:
        now = _proc_start_ticks(pid)
        if now is not None and now != start_ticks:
            return False  # the pid was recycled by another process
    return True


@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    start_ticks: int | None
    taken_at: float

    @classmethod
    def me(cls) -> "LockHolder":
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid, start_ticks=_proc_start_ticks(pid), taken_at=time.time())

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.taken_at))
        return f"pid {self.pid} on {self.host}, taken {started}"


def read_holder(path: Path) -> LockHolder | None:
    try:
        d = json.loads(path.read_text())
        return LockHolder(host=str(d["host"]), pid=int(d["pid"]), start_ticks=d.get("start_ticks"), taken_at=float(d["taken_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stale_reason(path: Path, timeout_s: float, now: float | None = None) -> str | None:
    """Why the lock at `path` may be broken, or None while its holder may still be working."""
    now = time.time() if now is None else now
    holder = read_holder(path)
    if holder is None:
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            return None
        return f"unreadable lock, {age:.0f} s old" if age > timeout_s else None
    if holder.host == socket.gethostname() and not _alive(holder.pid, holder.start_ticks):
        return f"its holder ({holder.describe()}) is no longer running"
    if now - holder.taken_at > timeout_s:
        return f"its holder ({holder.describe()}) took it over {timeout_s:.0f} s ago"
    return None


def create(path: Path, holder: LockHolder, extra: dict | None = None, attempts: int = 5) -> bool:
    """Link a fully written temp file into place (False if the lock exists). The temp can vanish
    under us when another rank's finalize sweeps the folder's temporary files; the write is then
    simply redone. `extra`: more fields for the lock's readers (the output lock's run id, stage)."""
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    for _ in range(attempts):
        tmp.write_text(json.dumps({**vars(holder), **(extra or {})}) + "\n")
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except FileNotFoundError:
            continue  # our temp was swept away between the write and the link
        finally:
            tmp.unlink(missing_ok=True)
    raise OSError(f"{path}: could not create the lock: its temporary file kept disappearing ({attempts} tries)")


def alive(holder: LockHolder) -> bool:
    """Whether the holder may still be running: on this host, its pid with its start time; another
    host cannot be probed, so it counts as alive (the caller judges it by a heartbeat or an age)."""
    return holder.host != socket.gethostname() or _alive(holder.pid, holder.start_ticks)


def break_lock(path: Path, seen: bytes, reason: str) -> bool:
    """Remove the stale lock whose content was `seen`, unless another process broke and retook it
    meanwhile. True when the lock is gone (by us or by another breaker)."""
    aside = path.with_name(f"{path.name}.broken-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # someone else broke it meanwhile
    if aside.read_bytes() != seen:  # another process broke and retook it between our read and rename
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    print(f"{path}: breaking a stale lock: {reason}", file=sys.stderr)
    return True


def acquire(path: str | os.PathLike, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Take the lock; break it first if it is stale. False while a live holder has it."""
    path = Path(path)
    if create(path, LockHolder.me()):
        return True
    reason = stale_reason(path, timeout_s)
    if reason is None:
        return False
    before = path.read_bytes() if path.exists() else b""
    if not break_lock(path, before, reason):
        return False
    return create(path, LockHolder.me())
