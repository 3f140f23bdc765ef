"""crawl-ingest's cross-shard dedup on every rank, in four restartable phases (files: ingest/dedup_work.py).

1. rows: each shard's ok rows as (bucket, hash, key) arrays; 2. buckets: each resolved on its own
(exact runs, verified band pairs); 3. greedy: one rank replays the one-pass rule over the keys in
pairs only; 4. final index: each shard's index with its duplicates marked. A rank does its own
units first and then, from the far end, the units nobody has finished, so a slow or dead rank's
work is taken over; every unit is a pure function of the inputs, so a unit done twice writes the
same bytes. The rank that finishes last writes the manifest (ShardedOutput.try_finalize).
"""
from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any, Callable

import pyarrow.parquet as pq

from lvdtool.artifacts import run_lock
from lvdtool.artifacts.atomic import atomic_write_json
from lvdtool.artifacts.fingerprint import file_sha256
from lvdtool.artifacts.ranks import RankInfo
from lvdtool.artifacts.sharded_output import WORK_DIR, ShardedOutput, ShardRecord
from lvdtool.console import console, progress
from lvdtool.errors import ArtifactError
from lvdtool.ingest import count_url_list
from lvdtool.ingest.dedup_work import DedupWork, apply_duplicates, auto_buckets

if TYPE_CHECKING:
    from lvdtool.stages.crawl_ingest import CrawlIngestConfig


def _perceptual_keys(cfg: CrawlIngestConfig) -> tuple[int, int] | None:
    """The key range of the perceptual dedup: URL-list records come first, then folder records."""
    urls, dirs = cfg.dedup.perceptual and bool(cfg.inputs.urls), cfg.dedup.perceptual_dirs and bool(cfg.inputs.dirs)
    if not (urls or dirs):
        return None
    if urls == dirs or not cfg.inputs.dirs or not cfg.inputs.urls:
        return (0, 1 << 62)
    n_url = sum(count_url_list(p, url_column=cfg.inputs.url_column) for p in cfg.inputs.urls)  # mixed inputs only
    return (0, n_url) if urls else (n_url, 1 << 62)


def _dedup_work(out: ShardedOutput, cfg: CrawlIngestConfig, n_shards: int, perceptual_keys=None) -> DedupWork:
    buckets = cfg.dedup.buckets or auto_buckets(n_shards * cfg.shard_size)  # from the config only: reruns agree
    return DedupWork(out.dir / WORK_DIR / "dedup", buckets, cfg.dedup.exact, perceptual_keys is not None,
                     cfg.dedup.max_distance, perceptual_keys or (0, 0))


def _mine_first(units: list, ranks: RankInfo) -> list:
    """This rank's units in order, then the others' from the far end: a rank that is done early takes
    over the work of a slow or dead one, and two ranks rarely meet on one unit (if they do, both write
    the same bytes)."""
    own = units[ranks.rank :: ranks.world_size]
    others = [u for i, u in enumerate(units) if i % ranks.world_size != ranks.rank]
    return own + others[::-1]


def _wait_for_shards(out: ShardedOutput, names: list[str], wait_s: float) -> bool:
    """Every shard committed, waiting up to wait_s for the other ranks; False if they are not done by then."""
    pending, deadline, pause = list(names), time.monotonic() + wait_s, 0.05
    while True:
        pending = [n for n in pending if not out.is_done(n)]
        if not pending:
            return True
        if time.monotonic() > deadline:
            console.print(f"crawl-ingest: {len(pending)} shards (first {pending[0]}) are not done after {wait_s:.0f} s; "
                          "the rank that finishes them completes the dedup")
            return False
        time.sleep(pause)
        pause = min(2 * pause, 5.0)


def _kill_hook() -> int:
    """Tests: LVD_TEST_KILL_AFTER_BUCKETS=k makes this process SIGKILL itself after resolving k buckets."""
    return int(os.environ.get("LVD_TEST_KILL_AFTER_BUCKETS", "0") or 0)


def _write_result_once(work: DedupWork, wait_s: float) -> None:
    """One rank replays the greedy rule (under a lock that a dead holder cannot keep); the others wait."""
    lock = work.root / "result.lock"
    while not work.result_path.exists():
        if run_lock.acquire(lock, timeout_s=wait_s):
            try:
                if not work.result_path.exists():
                    work.write_result()
            finally:
                lock.unlink(missing_ok=True)
        else:
            time.sleep(0.1)


def _write_final_index(out: ShardedOutput, work: DedupWork, name: str, result, key_of: Callable[[int], str]) -> None:
    table = pq.read_table(out.dir / WORK_DIR / f"{name}.index.parquet")
    table, counts = apply_duplicates(table, result, key_of)
    final_rel = f"shards/{name}.parquet"
    tmp = out.temp(final_rel)
    pq.write_table(table, tmp, compression="zstd")
    meta = {"bytes": tmp.stat().st_size, "sha256": file_sha256(tmp)}
    tmp.replace(out.dir / final_rel)
    atomic_write_json(work.final_marker(name), {**meta, **counts})


def _final_is_current(out: ShardedOutput, work: DedupWork, name: str) -> bool:
    marker, final = work.final_done(name), out.dir / f"shards/{name}.parquet"
    return marker is not None and final.exists() and final.stat().st_size == marker["bytes"]


def _do_unit(is_done: Callable[[], bool], do: Callable[[], Any]) -> bool:
    """Do one unit unless it is done; True if this process did it. A rank that finalises sweeps every
    temp file, including one a slower rank was writing for a unit done meanwhile: that is not an error."""
    if is_done():
        return False
    try:
        do()
    except FileNotFoundError:
        if is_done():
            return False
        raise
    return True


def dedup_shards(out: ShardedOutput, cfg: CrawlIngestConfig, names: list[str], key_of: Callable[[int], str]) -> bool:
    """The cross-shard dedup in four restartable phases: rows per shard, buckets, greedy, final index per
    shard. Returns False when other ranks' shards were not done within cfg.wait_s."""
    if not _wait_for_shards(out, names, cfg.wait_s):
        return False
    work = _dedup_work(out, cfg, len(names), _perceptual_keys(cfg))
    columns = ["position", "status", "content_hash", "phash"]
    for name in _mine_first(names, out.ranks):
        _do_unit(lambda: work.rows_done(name),
                 lambda: work.write_rows(name, pq.read_table(out.dir / WORK_DIR / f"{name}.index.parquet", columns=columns)))
    kill_after, resolved = _kill_hook(), 0
    with progress() as bar:
        task = bar.add_task(f"dedup buckets rank {out.ranks.rank}", total=work.buckets)
        for bucket in _mine_first(list(range(work.buckets)), out.ranks):
            if _do_unit(lambda: work.bucket_done(bucket), lambda: work.resolve_bucket(bucket, names)):
                resolved += 1
                if kill_after and resolved >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            bar.advance(task)
    _write_result_once(work, cfg.wait_s)
    result = work.read_result()
    for name in _mine_first(names, out.ranks):
        _do_unit(lambda: _final_is_current(out, work, name), lambda: _write_final_index(out, work, name, result, key_of))
    return True


def finalize_dedup(out: ShardedOutput, cfg: CrawlIngestConfig, records: list[ShardRecord]) -> dict[str, Any]:
    """At finalisation: record each shard's final index (written by dedup_shards) and sum its counts."""
    work = _dedup_work(out, cfg, len(records))
    status_counts: dict[str, int] = {}
    exact = perceptual = 0
    for record in records:
        marker = work.final_done(record.name)
        if marker is None:
            raise ArtifactError(f"{out.dir}: shard {record.name} has no final index; rerun the same command")
        record.files[f"shards/{record.name}.parquet"] = {"bytes": marker["bytes"], "sha256": marker["sha256"]}
        for s, c in marker["status"].items():
            status_counts[s] = status_counts.get(s, 0) + c
        exact += marker["exact"]
        perceptual += marker["perceptual"]
    return {
        "status": dict(sorted(status_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "duplicates": {"exact": exact, "perceptual": perceptual},
    }
