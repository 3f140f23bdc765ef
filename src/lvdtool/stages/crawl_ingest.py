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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import MISSING

from lvdtool.artifacts.fingerprint import directory_fingerprint, file_fingerprint
from lvdtool.artifacts.images import ImageShardWriter, index_table
from lvdtool.artifacts.manifest import InputRef, read_manifest
from lvdtool.artifacts.ranks import RankInfo, rank_info
from lvdtool.artifacts.sharded_output import WORK_DIR, ShardedOutput, ShardRecord, shard_name
from lvdtool.artifacts.stats import count
from lvdtool.concurrency import ordered_map
from lvdtool.local_processes import fan_out
from lvdtool.stages.crawl_ingest_dedup import dedup_shards, finalize_dedup
from lvdtool.config import compose_config
from lvdtool.console import console, print_summary, progress
from lvdtool.errors import ConfigError, InputError
from lvdtool.ingest import (
    FaceBlurrer,
    Fetcher,
    FetchConfig,
    ProcessConfig,
    SourceRecord,
    content_hash,
    count_url_list,
    encode_image,
    load_filter_hook,
    phash64,
    process_image,
    read_file,
    read_url_list,
    scan_directory,
)

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
    wait_s: float = 3600.0  # see configs/crawl_ingest.yaml
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


def count_records(cfg: CrawlIngestConfig) -> int:
    """How many records iter_records yields (the progress total): Parquet lists from their footer,
    other lists in one pass, folders in one walk."""
    n = sum(count_url_list(p, url_column=cfg.inputs.url_column) for p in cfg.inputs.urls)
    return n + sum(1 for d in cfg.inputs.dirs for _ in scan_directory(d))


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
    n_records = count_records(cfg)
    counted = -(-n_records // cfg.shard_size)  # shards; the inputs are read again below, as they stream
    mine = [i for i in range(counted) if out.owns(i)]
    done = {i for i in mine if out.is_done(shard_name(i), verify=cfg.verify)}
    todo = [i for i in mine if i not in done]
    with progress() as bar:
        total = sum(min(cfg.shard_size, n_records - i * cfg.shard_size) for i in todo)
        task = bar.add_task(f"crawl-ingest rank {out.ranks.rank}/{out.ranks.world_size}", total=total, shards=len(todo))
        for index, records in iter_shards(iter_records(cfg), cfg.shard_size):
            n_shards = index + 1
            if not out.owns(index):
                continue
            if index in done if index < counted else out.is_done(shard_name(index), verify=cfg.verify):
                skipped += 1
                continue
            write_shard(out, index, records, processor, cfg, bar, task)
            done_here += 1
            bar.update(task, shards_done=done_here)
    if n_shards == 0:
        raise InputError("the inputs hold no records (empty URL lists or folders without images)")
    names = [shard_name(i) for i in range(n_shards)]
    if dedup_shards(out, cfg, names, key_of):
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
