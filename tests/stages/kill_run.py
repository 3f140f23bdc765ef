"""Kill a training command the hard way at a chosen point: for the SIGKILL + rerun tests."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def run_until_then_kill(command: list[str], marker: Path, env: dict[str, str], timeout: float = 120) -> None:
    """Start `command` in its own session and SIGKILL the whole process group (a launcher and all its
    ranks) as soon as `marker` exists; asserts that the run got that far."""
    proc = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), f"the run died before {marker.name} appeared"
