"""`lvd curate`: pool embeddings (+ a dedup selection) and seed sets -> selection artifact.

DINOv2 retrieval (sample mode: k nearest pool images per seed image; cluster mode: images
sampled from pool clusters linked to more than 3 seed images, capped per set) and/or the DINOv3
balanced subset (`--method hkmeans`: hierarchical k-means + balanced sampling). Global steps
(pool k-means, each seed set's retrieval, the hierarchy) are saved under `_work/` and reused on
rerun; the union is written as one selection shard per pool embeddings shard, then a report.

Under torchrun/srun (WORLD_SIZE > 1): each rank filters its own shards by the input selection
(`Selection`, a sorted join per shard) and holds its consecutive shards for the pool k-means
(torch.distributed all-reduce, `accumulate=exact` so any W gives the bytes of one process,
checkpointed every `kmeans.checkpoint_every` iterations); retrieval and the union run on rank 0
(seed sets are small next to the pool; an IVF index is stored as `_work/index.faiss`); every
rank writes the selection shards it owns (shard i -> rank i mod W). `--method hkmeans` runs in one
process (its resampling picks rows across the whole pool) and refuses WORLD_SIZE > 1.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import MISSING

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.artifacts.manifest import input_ref, open_input, read_manifest
from lvdtool.artifacts.selection import Selection
from lvdtool.artifacts.sharded_output import ShardedOutput
from lvdtool.artifacts.verify import check_level, checked_images, images_input, verify_input
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
from lvdtool.curation.shard_range import ShardRange, rank_shards
from lvdtool.curation.stage_ranks import StageRanks, join_ranks, refuse_distributed
from lvdtool.curation.seed_sets import RetrievalDefaults, SeedSet, SeedSetConfig, resolve_seed_sets
from lvdtool.curation.union import Union, union_of, union_stats
from lvdtool.curation.work_state import WorkState
from lvdtool.errors import ConfigError, InputError
from lvdtool.index import assign, select_backend
from lvdtool.index.vectors import VectorSource

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
    verify: str = "size"  # inputs checked before reading: size (sizes, row counts) or full (+ sha256; reads them)


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


def selected_rows(art: EmbeddingsArtifact, selection: Selection, first: int = 0, stop: int | None = None) -> np.ndarray:
    """Artifact rows of shards [first, stop) whose key the selection keeps, shard by shard (a sorted join
    per shard: O(rows of the shard) each, no global key set). A selection key missing from its pool
    shard is an error."""
    names = [s.name for s in shard_rows(art)]
    selection.check_shards(names, art.path)
    parts = []
    for shard in shard_rows(art)[first:stop]:
        if not selection.rows.get(shard.name):
            continue
        keys = read_shard_keys(art, shard.name, shard.stop - shard.start)
        mask = selection.mask(shard.name, keys, where=f"pool shard {shard.name} of {art.path}")
        found = int(mask.sum())
        if found != selection.rows[shard.name]:
            raise InputError(f"{selection.shard_path(shard.name)}: {selection.rows[shard.name] - found} of its keys are not in "
                             f"pool shard {shard.name} of {art.path} (a selection of other embeddings?)")
        parts.append(np.flatnonzero(mask).astype(np.int64) + shard.start)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _open_inputs(cfg: CurateConfig) -> tuple[EmbeddingsArtifact, Selection | None, list]:
    art = EmbeddingsArtifact(cfg.pool)
    refs = [input_ref(cfg.pool, art.manifest, role="pool")]
    selection = None
    if cfg.selection:
        selection = Selection(cfg.selection)
        refs.append(input_ref(cfg.selection, selection.manifest, role="selection"))
    return art, selection, refs


def _check_inputs(cfg: CurateConfig, art: EmbeddingsArtifact, selection: Selection | None, sets: list[SeedSet]) -> None:
    """Before reading (rank 0): every input's shards against their markers (cfg.verify), the input
    selection against the images the pool was embedded from, and those images, which the report
    shows, against the fingerprint the pool recorded."""
    verify_input(art.path, art.manifest, cfg.verify)
    if selection is not None:
        verify_input(selection.path, selection.manifest, cfg.verify)
        selection.check_images(art.path)
    for s in sets:
        verify_input(s.path, s.artifact.manifest, cfg.verify)
    if cfg.report.enabled:
        checked_images(cfg.pool, art.manifest)


def _rank_bounds(art: EmbeddingsArtifact, ranks: StageRanks) -> np.ndarray:
    return rank_shards(np.array([int(s["rows"]) for s in art.manifest.shards], np.int64), ranks.world_size)


def _pool_rows(art: EmbeddingsArtifact, selection: Selection | None, work: WorkState, ranks: StageRanks) -> np.ndarray:
    """Artifact rows of the pool (all, or the selection's): each rank filters its own shards, rank 0
    joins the parts (consecutive shards in rank order: already ascending) into `_work/pool_rows.npz`."""
    if selection is None:
        return np.arange(art.num_vectors, dtype=np.int64)
    name = "pool_rows"
    if not ranks.agree(work.load(name) is not None):
        bounds = _rank_bounds(art, ranks)
        part = f"{name}-part{ranks.rank:05d}of{ranks.world_size:05d}"
        work.save(part, {"rows": selected_rows(art, selection, int(bounds[ranks.rank]), int(bounds[ranks.rank + 1]))})
        ranks.barrier()

        def join() -> None:
            parts = [f"{name}-part{r:05d}of{ranks.world_size:05d}" for r in range(ranks.world_size)]
            work.save(name, {"rows": np.concatenate([work.load(p)[0]["rows"] for p in parts])})
            for p in parts:
                work.path(p).unlink(missing_ok=True)

        ranks.on_main(join)
    rows = work.load(name)[0]["rows"].astype(np.int64)
    if not rows.size:
        raise InputError(f"{selection.path}: none of its keys are in the pool {art.path}")
    return rows


def _local_source(pool: Pool, ranks: StageRanks, limit_gb: float, chunk_rows: int) -> VectorSource:
    """This rank's consecutive pool rows for the distributed k-means: its own shards only."""
    bounds = _rank_bounds(pool.artifact, ranks)
    part = ShardRange(pool.artifact, int(bounds[ranks.rank]), int(bounds[ranks.rank + 1]))
    lo, hi = np.searchsorted(pool.rows, [part.row_start, part.row_stop])
    local: VectorSource = part
    if hi - lo != part.num_vectors:
        local = RowSubset(part, pool.rows[lo:hi] - part.row_start)
    return in_memory_if_small(local, limit_gb, chunk_rows)


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


UNION_WORK = "union"


def run(cfg: CurateConfig, resolved: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    if cfg.method not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {cfg.method!r}")
    if cfg.method == "retrieval" and not (cfg.seeds or cfg.seed_paths):
        raise ConfigError("curate needs --seed NAME or --seed-path DIR (or --method hkmeans --target N)")
    check_level("verify", cfg.verify)
    if cfg.dry_run:
        return _dry_run(cfg)
    if cfg.method == "hkmeans":
        # resampling steps pick rows across the whole pool: one process (each level is checkpointed)
        refuse_distributed("curate --method hkmeans")
    ranks = join_ranks("curate")
    try:
        return _run(cfg, resolved, overwrite, ranks)
    finally:
        ranks.close()


def _run(cfg: CurateConfig, resolved: dict[str, Any], overwrite: bool, ranks: StageRanks) -> dict[str, Any]:
    art, selection, refs = _open_inputs(cfg)
    sets = resolve_seed_sets(cfg.seeds, cfg.seed_paths, cfg.seed_sets, cfg.retrieval)
    for s in sets:
        if s.artifact.dim != art.dim:
            raise InputError(f"{s.path}: seed set {s.name} has {s.artifact.dim}-d embeddings, the pool {art.dim}-d")
        refs.append(input_ref(s.path, s.artifact.manifest, role=f"seed:{s.name}"))
    ranks.on_main(lambda: _check_inputs(cfg, art, selection, sets))
    # option errors before the output exists
    backend = select_backend(cfg.device, cfg.engine, cfg.precision)
    km = kmeans_config(cfg.kmeans, cfg.engine, cfg.device, cfg.precision, cfg.search.chunk_rows)

    def open_out(overwrite: bool) -> ShardedOutput:
        return ShardedOutput(cfg.out, kind="selection", stage="curate", config=resolved, inputs=refs, overwrite=overwrite,
                             ranks=ranks.info,
                             resume_ignores=("report", "dry_run", "dry_run_vectors", "dry_run_dim", "dry_run_flops",
                                             "verify"))

    out = ranks.on_main(lambda: open_out(overwrite))  # rank 0 starts (or clears) the output, then the others join
    out = out if ranks.is_main else open_out(False)
    if out.already_complete:
        console.print(f"{cfg.out}: already complete, nothing to do")
        return out.manifest.stats
    work = WorkState(out.dir)
    rows = _pool_rows(art, selection, work, ranks)
    pool = Pool(art, RowKeys(art, rows), rows, RowSubset(art, rows) if selection is not None else art, art.num_vectors)
    names = [s.name for s in sets] + ([BALANCED] if cfg.method == "hkmeans" else [])
    state: dict[str, Any] = {}

    with progress() as bar:
        task = bar.add_task("curate", total=2 + len(sets) + (cfg.method == "hkmeans"))
        local = _local_source(pool, ranks, cfg.kmeans.memory_limit_gb, cfg.search.chunk_rows)
        clusters = pool_kmeans(local, pool.size, cfg.retrieval.pool_clusters, km, work, ranks, cfg.kmeans.checkpoint_every)
        del local
        bar.advance(task)
        # an IVF index is filled by every rank (its own rows) and merged; the searches run on rank 0
        PoolSearcher(pool.source, cfg.search, backend).store(work.dir / "index.faiss", ranks)

        def global_steps() -> None:
            # retrieval from every seed set and the union: rank 0 (seed sets are small next to the pool)
            source = in_memory_if_small(pool.source, cfg.kmeans.memory_limit_gb, cfg.search.chunk_rows)
            searcher = PoolSearcher(source, cfg.search, backend)
            searcher.load_or_build(work.dir / "index.faiss")
            results = []
            for s in sets:
                results.append(_retrieve(cfg, s, searcher, clusters, work, backend))
                bar.advance(task)
            if cfg.method == "hkmeans":
                results.append(balanced_subset(source, cfg.hkmeans, km, work, cfg.random_seed))
                bar.advance(task)

            def union() -> tuple[dict, dict]:
                u = union_of(results)
                return {**vars(u), "cluster": clusters["assignment"][u.pool_rows].astype(np.int64)}, {}

            work.cached(UNION_WORK, union)
            state.update(results=results)

        ranks.on_main(global_steps)
        arrays = work.load(UNION_WORK)[0]
        union = Union(*(arrays[f] for f in ("pool_rows", "source", "query_rows", "similarity", "n_sets")))
        _write_shards(out, pool, union, names, sets, arrays["cluster"], ranks.owns)
        ranks.barrier()
        bar.advance(task)

    def finalize(records) -> dict[str, Any]:
        results = state["results"]
        stats = _stats(pool, clusters, results, names, union)
        if cfg.report.enabled:
            pictures, notes = write_pictures(out.dir / "report", cfg.report, pool.keys, pool.artifact, sets, results, union,
                                             clusters)
            write_curate_report(out.dir / "report", stats, pictures, notes)
        return stats

    images_ref = images_input(pool.artifact.manifest)
    extra = {"images": pool.artifact.manifest.extra.get("images"),
             "images_fingerprint": images_ref.fingerprint if images_ref else None, "pool": str(Path(cfg.pool).resolve()),
             "sets": names, "work": {"reused": work.reused, "computed": work.computed}}
    finalized = ranks.on_main(lambda: out.try_finalize([s.name for s in shard_rows(pool.artifact)], finalize=finalize,
                                                       extra=extra))
    out.manifest = read_manifest(out.dir)
    stats = out.manifest.stats
    if ranks.is_main:
        print_summary(f"curate -> {cfg.out}", {
            "pool images": pool.size,
            **{f"{n} ({r.stats['mode']})": r.stats["selected"] for n, r in zip(names, state["results"])},
            "selected (union)": union.size, "in several sets": stats.get("union", {}).get("in_several_sets", 0),
            "ranks": ranks.world_size,
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


def _write_shards(out: ShardedOutput, pool: Pool, union: Union, names: list[str], sets: list[SeedSet], cluster_of: np.ndarray,
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
            "cluster": cluster_of[mine].astype(np.int64),
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
