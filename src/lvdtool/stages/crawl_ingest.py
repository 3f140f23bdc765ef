"""`lvd crawl-ingest`: URL lists and image folders -> an `images` artifact.

Records are numbered in input order (all URL lists, then all folders, each in the order given);
record p goes to shard p // shard_size and gets key f"{p:012d}", so a rerun makes the same keys.
Each shard is fetched, decoded, validated, resized and written (tar + index) then committed.
When every shard is done, the cross-shard exact and perceptual dedup runs bucket by bucket on all
ranks (lvdtool.ingest.bucket_dedup, files under _work/dedup/) and each rank writes the final
indexes of its shards with status `duplicate` and the key each duplicate repeats.
"""
from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import MISSING

from lvdtool.artifacts import run_lock
from lvdtool.artifacts.atomic import atomic_write_json
from lvdtool.artifacts.fingerprint import directory_fingerprint, file_fingerprint, file_sha256
from lvdtool.artifacts.images import ImageShardWriter, index_table
from lvdtool.artifacts.manifest import InputRef, read_manifest
from lvdtool.artifacts.ranks import RankInfo, rank_info
from lvdtool.artifacts.sharded_output import WORK_DIR, ShardedOutput, ShardRecord, shard_name
from lvdtool.artifacts.stats import count
from lvdtool.concurrency import ordered_map
from lvdtool.local_processes import fan_out
from lvdtool.config import compose_config
from lvdtool.console import console, print_summary, progress
from lvdtool.errors import ArtifactError, ConfigError, InputError
from lvdtool.ingest import (
    FaceBlurrer,
    Fetcher,
    FetchConfig,
    ProcessConfig,
    SourceRecord,
    content_hash,
    encode_image,
    load_filter_hook,
    phash64,
    process_image,
    read_file,
    count_url_list,
    read_url_list,
    scan_directory,
)
from lvdtool.ingest.dedup_work import DedupWork, apply_duplicates, auto_buckets

KEY_DIGITS = 12


@dataclass
class InputsConfig:
    urls: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    label_from_dir: bool = False
    url_column: str = "url"
    label_column: str | None = None


@dataclass
class DedupConfig:
    exact: bool = True
    perceptual: bool = True  # among records of URL lists (crawled copies: re-encodes, resizes)
    perceptual_dirs: bool = False  # among records of folders (a labelled dataset's distinct images share pHashes)
    max_distance: int = 2  # from benchmarks/phash_calibration.py, see docs/curation.md
    buckets: int = 0  # 0: from the record count (about 1M rows a bucket)


@dataclass
class FilterConfig:
    blur_faces: bool = False
    filters: list[str] = field(default_factory=list)


@dataclass
class CrawlIngestConfig:
    out: str = MISSING
    inputs: InputsConfig = field(default_factory=InputsConfig)
    shard_size: int = 10000
    threads: int = 32
    processes: int = 1
    verify: str = "size"
    wait_s: float = 600.0
    fetch: FetchConfig = field(default_factory=FetchConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    ingest: FilterConfig = field(default_factory=FilterConfig)


def key_of(position: int) -> str:
    return f"{position:0{KEY_DIGITS}d}"


# ---------------------------------------------------------------- inputs
def _input_refs(cfg: CrawlIngestConfig) -> list[InputRef]:
    refs = []
    for p in cfg.inputs.urls:
        if not Path(p).is_file():
            raise InputError(f"{p}: URL list not found")
        refs.append(InputRef(path=str(Path(p).resolve()), kind="urls", fingerprint=file_fingerprint(p)))
    for d in cfg.inputs.dirs:
        if not Path(d).is_dir():
            raise InputError(f"{d}: image folder not found")
        refs.append(InputRef(path=str(Path(d).resolve()), kind="directory", fingerprint=directory_fingerprint(d)))
    if not refs:
        raise ConfigError("crawl-ingest needs at least one input: --urls FILE or --dir FOLDER")
    return refs


def iter_records(cfg: CrawlIngestConfig) -> Iterator[SourceRecord]:
    """All input records with global positions."""
    streams = [read_url_list(p, url_column=cfg.inputs.url_column, label_column=cfg.inputs.label_column) for p in cfg.inputs.urls]
    streams += [scan_directory(d, label_from_dir=cfg.inputs.label_from_dir) for d in cfg.inputs.dirs]
    for position, rec in enumerate(itertools.chain.from_iterable(streams)):
        yield SourceRecord(position=position, source=rec.source, kind=rec.kind, extra=dict(rec.extra), label=rec.label)


def iter_shards(records: Iterator[SourceRecord], shard_size: int) -> Iterator[tuple[int, list[SourceRecord]]]:
    index = 0
    while True:
        chunk = list(itertools.islice(records, shard_size))
        if not chunk:
            return
        yield index, chunk
        index += 1


# ---------------------------------------------------------------- per record
class RecordProcessor:
    """Fetch or read, decode/validate/resize, filter: one input record -> one index row (+ image bytes)."""

    def __init__(self, cfg: CrawlIngestConfig) -> None:
        self.cfg = cfg
        self.fetcher = Fetcher(cfg.fetch)
        self.blurrer = FaceBlurrer() if cfg.ingest.blur_faces else None
        self.hooks = [(spec, load_filter_hook(spec)) for spec in cfg.ingest.filters]

    def __call__(self, rec: SourceRecord) -> dict[str, Any]:
        row: dict[str, Any] = {
            "key": key_of(rec.position),
            "position": rec.position,
            "source": rec.source,
            "label": rec.label,
            "extra": rec.extra,
            "error": "",
            "faces": 0,
            "attempts": 0,
        }
        if rec.kind == "url":
            fetched = self.fetcher.fetch(rec.source)
            row["attempts"] = getattr(fetched, "attempts", 1)
        else:
            fetched = read_file(rec.source, self.cfg.fetch.max_bytes)
        if fetched.status != "ok":
            row.update(status=fetched.status, error=fetched.error)
            return row
        row["content_hash"] = content_hash(fetched.data)
        result = process_image(fetched.data, self.cfg.process)
        row.update(orig_width=result.orig_width, orig_height=result.orig_height)
        if result.status != "ok":
            row.update(status=result.status, error=result.error)
            return row
        image, data, ext = result.image, result.data, result.ext
        if self.blurrer is not None:
            image, n_faces = self.blurrer.blur(image)
            row["faces"] = n_faces
            if n_faces:  # the stored bytes must show the blurred image, never the original
                result = encode_image(result, self.cfg.process, image=image)
                data, ext = result.data, result.ext
        for spec, hook in self.hooks:
            try:
                reason = hook(image, {k: row[k] for k in ("key", "source", "label")} | dict(rec.extra))
            except Exception as exc:  # a user hook failing is a record outcome, not a crash
                row.update(status="filter_error", error=f"{spec}: {type(exc).__name__}: {exc}")
                return row
            if reason is not None:
                row.update(status="filtered", error=f"{reason} (rejected by {spec})")
                row["filter"] = reason
                return row
        row.update(
            status="ok",
            phash=phash64(image),
            width=image.width,
            height=image.height,
            bytes=len(data),
            ext=ext,
            data=data,
        )
        return row


# ---------------------------------------------------------------- shards
def _extra_columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        for c in r.get("extra", {}):
            cols.setdefault(c, None)
    return list(cols)


def write_shard(out: ShardedOutput, index: int, records: list[SourceRecord], processor: RecordProcessor, cfg, bar, task) -> ShardRecord:
    name = shard_name(index)
    tar_rel, idx_rel = f"shards/{name}.tar", f"{WORK_DIR}/{name}.index.parquet"
    tar_tmp, idx_tmp = out.temp(tar_rel), out.temp(idx_rel)
    writer = ImageShardWriter(tar_tmp)
    rows = []
    try:
        for row in ordered_map(processor, records, workers=cfg.threads):
            row["shard"] = name
            data = row.pop("data", None)
            if data is not None:
                meta = {k: row.get(k) for k in ("key", "source", "label", "width", "height", "content_hash")}
                meta.update(row.get("extra", {}))
                row["offset"] = writer.write(row["key"], row["ext"], data, meta)
            rows.append(row)
            bar.advance(task)
    finally:
        writer.close()
    pq.write_table(index_table(rows, _extra_columns(rows)).append_column("faces", pa.array([r["faces"] for r in rows], pa.int32())), idx_tmp)
    stats = {
        "fetched": count(r["status"] for r in rows),
        "fetch_attempts": sum(r["attempts"] for r in rows),
        "faces_blurred": sum(r["faces"] for r in rows),
        "images_with_faces": sum(1 for r in rows if r["faces"]),
        "filtered": count(r["filter"] for r in rows if r.get("filter")),
    }
    return out.commit(name, {tar_rel: tar_tmp, idx_rel: idx_tmp}, rows=len(rows), stats=stats)


# ---------------------------------------------------------------- cross-shard dedup, bucket by bucket
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


def _write_final_index(out: ShardedOutput, work: DedupWork, name: str, result) -> None:
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


def dedup_shards(out: ShardedOutput, cfg: CrawlIngestConfig, names: list[str]) -> bool:
    """The cross-shard dedup in four restartable phases: rows per shard, buckets, greedy, final index per
    shard. Returns False when other ranks' shards were not done within cfg.wait_s."""
    if not _wait_for_shards(out, names, cfg.wait_s):
        return False
    work = _dedup_work(out, cfg, len(names), _perceptual_keys(cfg))
    for name in _mine_first(names, out.ranks):
        if not work.rows_done(name):
            work.write_rows(name, pq.read_table(out.dir / WORK_DIR / f"{name}.index.parquet",
                                                columns=["position", "status", "content_hash", "phash"]))
    kill_after, resolved = _kill_hook(), 0
    with progress() as bar:
        task = bar.add_task(f"dedup buckets rank {out.ranks.rank}", total=work.buckets)
        for bucket in _mine_first(list(range(work.buckets)), out.ranks):
            if not work.bucket_done(bucket):
                work.resolve_bucket(bucket, names)
                resolved += 1
                if kill_after and resolved >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            bar.advance(task)
    _write_result_once(work, cfg.wait_s)
    result = work.read_result()
    for name in _mine_first(names, out.ranks):
        if not _final_is_current(out, work, name):
            _write_final_index(out, work, name, result)
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


# ---------------------------------------------------------------- entry point
def _output(cfg: CrawlIngestConfig, resolved: dict[str, Any], refs: list[InputRef], ranks: RankInfo,
            overwrite: bool = False) -> ShardedOutput:
    # Worker and process counts do not change the output, so a rerun may use other ones.
    return ShardedOutput(cfg.out, kind="images", stage="crawl-ingest", config=resolved, inputs=refs,
                         overwrite=overwrite, ranks=ranks, resume_ignores=("threads", "processes", "verify", "wait_s"))


def ingest_shards(cfg: CrawlIngestConfig, resolved: dict[str, Any], refs: list[InputRef], ranks: RankInfo) -> dict[str, Any]:
    """One rank's work: its unfinished shards, then the final manifest if it is the last to finish."""
    out = _output(cfg, resolved, refs, ranks)
    processor = RecordProcessor(cfg)
    done_here = skipped = n_shards = 0
    with progress() as bar:
        task = bar.add_task(f"crawl-ingest rank {out.ranks.rank}/{out.ranks.world_size}", total=None)
        for index, records in iter_shards(iter_records(cfg), cfg.shard_size):
            n_shards = index + 1
            if not out.owns(index):
                continue
            if out.is_done(shard_name(index), verify=cfg.verify):
                skipped += 1
                continue
            write_shard(out, index, records, processor, cfg, bar, task)
            done_here += 1
    if n_shards == 0:
        raise InputError("the inputs hold no records (empty URL lists or folders without images)")
    names = [shard_name(i) for i in range(n_shards)]
    if dedup_shards(out, cfg, names):
        out.try_finalize(names, finalize=lambda recs: finalize_dedup(out, cfg, recs))
    return {"written": done_here, "skipped": skipped, "total": n_shards}


def run(cfg: CrawlIngestConfig, resolved: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    if cfg.shard_size < 1 or cfg.threads < 1 or cfg.processes < 1:
        raise ConfigError("shard_size, threads and processes must be at least 1")
    if cfg.verify not in ("size", "full"):
        raise ConfigError(f"verify={cfg.verify!r}: expected size or full")
    refs = _input_refs(cfg)
    ranks = rank_info()
    out = _output(cfg, resolved, refs, ranks, overwrite=overwrite)  # config check, overwrite, stale temps
    if out.already_complete:
        console.print(f"{cfg.out}: already complete, nothing to do")
        return out.manifest.stats
    started = time.perf_counter()
    if cfg.processes > 1:
        console.print(f"crawl-ingest: {cfg.processes} local processes x {cfg.threads} threads")
        fan_out(ingest_shards, (cfg, resolved, refs), cfg.processes, ranks)
        shards = "split over local processes"
    else:
        counts = ingest_shards(cfg, resolved, refs, ranks)
        shards = f"{counts['written']} written, {counts['skipped']} already done, {counts['total']} in total"
    manifest = read_manifest(cfg.out)
    summary: dict[str, Any] = {"shards": shards, "seconds": round(time.perf_counter() - started, 1)}
    if manifest.complete:
        summary["status"] = manifest.stats.get("status", {})
        summary["duplicates"] = manifest.stats.get("duplicates", {})
        summary["manifest"] = str(Path(cfg.out) / "manifest.json")
    else:
        summary["manifest"] = "not yet: other ranks still have shards to finish"
    print_summary(f"crawl-ingest -> {cfg.out}", summary)
    return manifest.stats


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    cfg, resolved = compose_config("crawl_ingest", overrides, CrawlIngestConfig)
    return run(cfg, resolved, overwrite=overwrite)
