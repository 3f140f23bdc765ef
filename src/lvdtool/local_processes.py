"""Fan a sharded stage out over local processes, as extra ranks.

Process p of n, inside launch rank r of world W, acts as rank r * n + p of world W * n: the shard
split, the restart markers and the exactly-once manifest need nothing else. Used where the GIL
caps a stage's threads (decode, resize, encode in crawl-ingest).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
from typing import Any, Callable

from lvdtool.artifacts.ranks import RankInfo
from lvdtool.errors import LvdError


def _child(target: Callable[..., Any], args: tuple, ranks: RankInfo) -> None:
    os.environ["LVD_QUIET"] = "1"  # one progress display per terminal: the parent's
    try:
        target(*args, ranks)
    except LvdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def fan_out(target: Callable[..., Any], args: tuple, processes: int, base: RankInfo) -> None:
    """Run `target(*args, ranks)` in `processes` spawned processes and wait for all of them."""
    ctx = mp.get_context("spawn")
    procs = []
    for p in range(processes):
        ranks = RankInfo(rank=base.rank * processes + p, world_size=base.world_size * processes, run_id=base.run_id)
        proc = ctx.Process(target=_child, args=(target, args, ranks), name=f"lvd-rank{ranks.rank}")
        proc.start()
        procs.append(proc)
    failed = []
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            failed.append(f"{proc.name} (exit code {proc.exitcode})")
    if failed:
        raise LvdError(f"local processes failed: {', '.join(failed)}; rerun the same command to finish")
