"""Run the real `lvd` console script in a subprocess (what a user types)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LVD = str(Path(sys.executable).with_name("lvd"))


def lvd(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "LVD_QUIET": "1", **(env or {})}
    proc = subprocess.run([LVD, *args], capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"lvd {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def popen(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "LVD_QUIET": "1", **(env or {})}
    return subprocess.Popen([LVD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
