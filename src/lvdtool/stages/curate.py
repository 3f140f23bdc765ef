"""`lvd curate`: pool embeddings (+ a dedup selection) and seed sets -> selection artifact.

DINOv2 retrieval (sample mode: k nearest pool images per seed image; cluster mode: images
sampled from pool clusters linked to more than 3 seed images, capped per set) and/or the DINOv3
balanced subset (`--method hkmeans`: hierarchical k-means + balanced sampling). Global steps
(pool k-means, each seed set's retrieval, the hierarchy) are saved under `_work/` and reused on
rerun; the union is written as one selection shard per pool embeddings shard, then a report.
"""
from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import MISSING

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.artifacts.manifest import input_ref, open_input
from lvdtool.artifacts.ranks import RankInfo
from lvdtool.artifacts.selection import Selection
from lvdtool.artifacts.sharded_output import ShardedOutput
from lvdtool.config import compose_config
from lvdtool.console import console, print_summary, progress
from lvdtool.curation.clustering import HKMeansConfig, KMeansOptions, balanced_subset, in_memory_if_small, kmeans_config, pool_kmeans
from lvdtool.curation.curate_pictures import write_pictures
from lvdtool.curation.curate_report import write_curate_report
from lvdtool.curation.dry_run import curate_estimate, describe
from lvdtool.curation.keyed_rows import RowKeys, as_string_array, keys_of_rows, read_shard_keys, shard_rows
from lvdtool.curation.retrieval import SeedResult, retrieve_nearest, sample_linked_clusters
from lvdtool.curation.row_subset import RowSubset
from lvdtool.curation.search import PoolSearcher, SearchConfig
from lvdtool.curation.seed_sets import RetrievalDefaults, SeedSet, SeedSetConfig, resolve_seed_sets
from lvdtool.curation.union import Union, union_of, union_stats
from lvdtool.curation.work_state import WorkState
from lvdtool.errors import ConfigError, InputError
from lvdtool.index import assign, select_backend

METHODS = ("retrieval", "hkmeans")
BALANCED = "balanced"
SELECTION_SCHEMA = pa.schema([("key", pa.string()), ("seed", pa.string()), ("query_key", pa.string()),
                              ("similarity", pa.float32()), ("cluster", pa.int64()), ("n_sets", pa.int64())])


@dataclass
class ReportConfig:
    enabled: bool = True
    clusters: int = 6  # clusters in the contact sheet, one row each
    images_per_cluster: int = 8
    examples: int = 3  # retrieval examples per seed set
    neighbours: int = 6  # pool images shown beside each seed image
    cell: int = 96  # thumbnail size


@dataclass
class CurateConfig:
    pool: str = MISSING
    out: str = MISSING
    selection: str | None = None  # e.g. the dedup output: only its keys are in the pool
    seeds: list[str] = field(default_factory=list)  # names of seed_sets
    seed_paths: list[str] = field(default_factory=list)  # unnamed seed embeddings artifacts
    seed_sets: dict[str, SeedSetConfig] = field(default_factory=dict)  # filled from configs/seed/*.yaml
    method: str = "retrieval"  # retrieval | hkmeans (balanced subset, plus retrieval when seeds are given)
    retrieval: RetrievalDefaults = field(default_factory=RetrievalDefaults)
    hkmeans: HKMeansConfig = field(default_factory=HKMeansConfig)
    kmeans: KMeansOptions = field(default_factory=KMeansOptions)
    search: SearchConfig = field(default_factory=SearchConfig)
    engine: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    random_seed: int = 0  # cluster sampling and balanced sampling
    dry_run: bool = False
    dry_run_vectors: int | None = None  # estimate for this many pool images instead of the pool's count
    dry_run_dim: int | None = None  # ... and this embedding dimension instead of the pool's
    dry_run_flops: float = 3e11  # FLOP/s used to turn the estimate into hours (2 CPU cores here)
    report: ReportConfig = field(default_factory=ReportConfig)


@dataclass
class Pool:
    artifact: EmbeddingsArtifact
    keys: RowKeys  # keys of the pool rows (after the input selection), read lazily for reports
    rows: np.ndarray  # int64 ascending: artifact row of each pool row
    source: Any  # VectorSource over the pool rows
    total: int  # images in the artifact

    @property
    def size(self) -> int:
        return int(len(self.rows))


def selected_rows(art: EmbeddingsArtifact, selection: Selection) -> np.ndarray:
    """Artifact rows whose key the selection keeps, shard by shard (a sorted join per shard: O(rows of
    the shard) each, no global key set). A selection key missing from its pool shard is an error."""
    names = [s.name for s in shard_rows(art)]
    selection.check_shards(names, art.path)
    parts = []
    for shard in shard_rows(art):
        if not selection.rows.get(shard.name):
            continue
        keys = read_shard_keys(art, shard.name, shard.stop - shard.start)
        mask = selection.mask(shard.name, keys)
        found = int(mask.sum())
        if found != selection.rows[shard.name]:
            raise InputError(f"{selection.shard_path(shard.name)}: {selection.rows[shard.name] - found} of its keys are not in "
                             f"pool shard {shard.name} of {art.path} (a selection of other embeddings?)")
        parts.append(np.flatnonzero(mask).astype(np.int64) + shard.start)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _open_pool(cfg: CurateConfig) -> tuple[Pool, list]:
    art = EmbeddingsArtifact(cfg.pool)
    refs = [input_ref(cfg.pool, art.manifest, role="pool")]
    rows = np.arange(art.num_vectors, dtype=np.int64)
    source: Any = art
    if cfg.selection:
        selection = Selection(cfg.selection)
        refs.append(input_ref(cfg.selection, selection.manifest, role="selection"))
        rows = selected_rows(art, selection)
        if not rows.size:
            raise InputError(f"{cfg.selection}: none of its keys are in the pool {cfg.pool}")
        source = RowSubset(art, rows)
    return Pool(art, RowKeys(art, rows), rows, source, art.num_vectors), refs


def _set_rng(cfg: CurateConfig, name: str) -> np.random.Generator:
    # seeded by the set's name, so adding or reordering sets does not change another set's sample
    return np.random.default_rng([cfg.random_seed, zlib.crc32(name.encode())])


def _dry_run(cfg: CurateConfig) -> dict[str, Any]:
    manifest = open_input(cfg.pool, "embeddings")
    n = cfg.dry_run_vectors or sum(int(s["rows"]) for s in manifest.shards)
    dim = cfg.dry_run_dim or int(manifest.extra["dim"])
    defaults = cfg.retrieval
    sets = resolve_seed_sets(cfg.seeds, cfg.seed_paths, cfg.seed_sets, defaults, allow_missing=True)
    estimate = curate_estimate(n, dim, sets, defaults.pool_clusters, cfg.kmeans.n_iter, cfg.search.index)
    console.print(f"curate dry run: pool {n:,} x {dim}, {defaults.pool_clusters:,} clusters, index {cfg.search.index}")
    console.print(describe(estimate, sets, cfg.dry_run_flops), markup=False)
    return estimate.as_dict()


def _retrieve(cfg, s: SeedSet, searcher, clusters, work: WorkState, backend) -> SeedResult:
    def compute():
        if s.mode == "sample":
            result = retrieve_nearest(searcher, s.artifact, s.k, s.cap)
            return result.arrays(), result.stats
        seed_cluster, _ = assign(s.artifact, clusters["centroids"], chunk_rows=cfg.search.chunk_rows,
                                 device=backend.device, precision=backend.precision)
        result = sample_linked_clusters(clusters["assignment"], clusters["similarity"], seed_cluster,
                                        len(clusters["centroids"]), s.per_cluster, s.min_seed_images, s.cap,
                                        _set_rng(cfg, s.name))
        return {**result.arrays(), "seed_cluster": seed_cluster}, result.stats

    arrays, stats = work.cached(f"seed-{s.name}", compute)
    result = SeedResult.from_arrays(arrays, stats)
    result.stats = dict(stats)
    if "seed_cluster" in arrays:
        result.stats["_seed_cluster"] = arrays["seed_cluster"]
    return result


def _single_process() -> RankInfo:
    # A global step: one process does it all whatever the launcher says; a fresh run id per launch so a
    # finalize lock left by a killed run never blocks the next one.
    return RankInfo(rank=0, world_size=1, run_id=f"curate-{os.getpid()}-{time.time_ns()}")


def run(cfg: CurateConfig, resolved: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    if cfg.method not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.method == "retrieval" and not (cfg.seeds or cfg.seed_paths):
        raise ConfigError("curate needs --seed NAME or --seed-path DIR (or --method hkmeans --target N)")
    if cfg.dry_run:
        return _dry_run(cfg)
    pool, refs = _open_pool(cfg)
    sets = resolve_seed_sets(cfg.seeds, cfg.seed_paths, cfg.seed_sets, cfg.retrieval)
    for s in sets:
        if s.artifact.dim != pool.artifact.dim:
            raise InputError(f"{s.path}: seed set {s.name} has {s.artifact.dim}-d embeddings, the pool {pool.artifact.dim}-d")
        refs.append(input_ref(s.path, s.artifact.manifest, role=f"seed:{s.name}"))
    out = ShardedOutput(cfg.out, kind="selection", stage="curate", config=resolved, inputs=refs, overwrite=overwrite,
                        ranks=_single_process(),
                        resume_ignores=("report", "dry_run", "dry_run_vectors", "dry_run_dim", "dry_run_flops"))
    if out.already_complete:
        console.print(f"{cfg.out}: already complete, nothing to do")
        return out.manifest.stats
    backend = select_backend(cfg.device, cfg.engine, cfg.precision)
    work = WorkState(out.dir)
    km = kmeans_config(cfg.kmeans, cfg.engine, cfg.device, cfg.precision, cfg.search.chunk_rows)
    source = in_memory_if_small(pool.source, cfg.kmeans.memory_limit_gb, cfg.search.chunk_rows)

    with progress() as bar:
        task = bar.add_task("curate", total=2 + len(sets) + (cfg.method == "hkmeans"))
        clusters = pool_kmeans(source, cfg.retrieval.pool_clusters, km, work)
        bar.advance(task)
        searcher = PoolSearcher(source, cfg.search, backend)
        results, names = [], []
        for s in sets:
            results.append(_retrieve(cfg, s, searcher, clusters, work, backend))
            names.append(s.name)
            bar.advance(task)
        if cfg.method == "hkmeans":
            results.append(balanced_subset(source, cfg.hkmeans, km, work, cfg.random_seed))
            names.append(BALANCED)
            bar.advance(task)
        union = union_of(results)
        _write_shards(out, pool, union, names, sets, clusters["assignment"])
        bar.advance(task)

    def finalize(records) -> dict[str, Any]:
        stats = _stats(pool, clusters, results, names, union)
        if cfg.report.enabled:
            pictures, notes = write_pictures(out.dir / "report", cfg.report, pool.keys, pool.artifact, sets, results, union,
                                             clusters)
            write_curate_report(out.dir / "report", stats, pictures, notes)
        return stats

    extra = {"images": pool.artifact.manifest.extra.get("images"), "pool": str(Path(cfg.pool).resolve()),
             "sets": names, "work": {"reused": work.reused, "computed": work.computed}}
    finalized = out.try_finalize([s.name for s in shard_rows(pool.artifact)], finalize=finalize, extra=extra)
    stats = out.manifest.stats
    print_summary(f"curate -> {cfg.out}", {
        "pool images": pool.size,
        **{f"{n} ({r.stats['mode']})": r.stats["selected"] for n, r in zip(names, results)},
        "selected (union)": union.size, "in several sets": stats.get("union", {}).get("in_several_sets", 0),
        "work reused": ", ".join(work.reused) or "nothing",
        "manifest": str(Path(cfg.out) / "manifest.json") if finalized else "not written (another process is finalizing)",
    })
    return stats


def _query_keys(union: Union, sets: list[SeedSet]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed set: (sorted unique seed rows that brought union rows in, their keys as bytes):
    memory O(seed images), read once, looked up per shard."""
    out = []
    for j, s in enumerate(sets):
        mine = (union.source == j) & (union.query_rows >= 0)
        rows = np.unique(union.query_rows[mine])
        out.append((rows, keys_of_rows(s.artifact, rows)))
    return out


def _write_shards(out: ShardedOutput, pool: Pool, union: Union, names: list[str], sets: list[SeedSet], cluster_of,
                  owns=lambda index: True) -> None:
    """One selection shard per pool shard, each O(its rows): the union's artifact rows are ascending,
    so a shard's part is one `searchsorted` slice."""
    art_rows = pool.rows[union.pool_rows]
    shards = shard_rows(pool.artifact)
    cuts = np.searchsorted(art_rows, [s.start for s in shards] + [pool.total])
    query_keys = _query_keys(union, sets)
    seed_names = pa.array(names, pa.string())
    for index, shard in enumerate(shards):
        if not owns(index) or out.is_done(shard.name):
            continue
        mine = slice(int(cuts[index]), int(cuts[index + 1]))
        keys = read_shard_keys(pool.artifact, shard.name, shard.stop - shard.start)[art_rows[mine] - shard.start]
        source, query = union.source[mine], union.query_rows[mine]
        width = max([k.dtype.itemsize for _, k in query_keys] + [1])
        query_key = np.zeros(len(source), dtype=f"S{width}")
        has_query = np.zeros(len(source), dtype=bool)
        for j, (rows, set_keys) in enumerate(query_keys):
            take = (source == j) & (query >= 0)
            query_key[take] = set_keys[np.searchsorted(rows, query[take])]
            has_query |= take
        table = pa.table({
            "key": as_string_array(keys),
            "seed": pa.DictionaryArray.from_arrays(pa.array(source.astype(np.int32)), seed_names).dictionary_decode(),
            "query_key": as_string_array(query_key, has_query),
            "similarity": union.similarity[mine],
            "cluster": cluster_of[union.pool_rows[mine]].astype(np.int64),
            "n_sets": union.n_sets[mine].astype(np.int64),
        }, schema=SELECTION_SCHEMA)
        rel = f"shards/{shard.name}.parquet"
        tmp = out.temp(rel)
        pq.write_table(table, tmp, compression="zstd")
        out.commit(shard.name, {rel: tmp}, rows=len(keys), stats={"selected": len(keys)})


def _stats(pool: Pool, clusters, results: list[SeedResult], names: list[str], union: Union) -> dict[str, Any]:
    return {
        "pool": {"images": pool.total, "after_selection": pool.size if pool.size != pool.total else None,
                 "clusters": int(len(clusters["centroids"]))},
        "sets": {n: {k: v for k, v in r.stats.items() if not k.startswith("_")} for n, r in zip(names, results)},
        "union": union_stats(union, names),
    }


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    cfg, resolved = compose_config("curate", overrides, CurateConfig)
    return run(cfg, resolved, overwrite=overwrite)
