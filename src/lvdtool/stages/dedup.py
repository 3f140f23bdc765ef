"""`lvd dedup`: embeddings artifact -> selection of one image per near-duplicate component.

DINOv2's method: the k nearest neighbours of every image (k = 64), edges above a cosine
threshold (0.6), connected components, one representative per component; `--against` eval sets
remove every component with a pool image above 0.45 of an eval image. The global steps (neighbour
blocks, components, eval matches, similarities of removed rows) are saved under `_work/`; the kept
keys are then written as one selection shard per embeddings shard.

Under torchrun/srun (WORLD_SIZE > 1) the ranks share the work: k-NN query block i and output shard
i belong to rank i mod W; an IVF index is built once on rank 0 and stored as `_work/index.faiss`
(reused by every rank and by a rerun); components and the keep decision run on rank 0 on int
arrays and reach the others through `_work/`. The output is byte-identical for any W.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import MISSING

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.artifacts.manifest import input_ref, read_manifest
from lvdtool.artifacts.sharded_output import ShardedOutput
from lvdtool.artifacts.verify import check_level, checked_images, images_input, verify_input
from lvdtool.config import compose_config
from lvdtool.console import console, print_summary, progress
from lvdtool.curation.calibration import CalibrationView, write_calibration_views
from lvdtool.curation.decontaminate import Benchmark, eval_pool_pairs, parse_against
from lvdtool.curation.dedup_decision import DedupDecision, benchmark_stats, decide, graph_stats
from lvdtool.curation.dedup_report import removed_table, write_dedup_report, write_removed
from lvdtool.curation.duplicate_graph import Pairs, compute_neighbour_blocks, load_neighbour_pairs, sparse_duplicate_components
from lvdtool.curation.image_lookup import ImageLookup
from lvdtool.curation.keyed_rows import RowKeys, ShardRows, as_string_array, keys_of_rows, read_shard_keys, shard_rows
from lvdtool.curation.removed_similarity import removed_similarities
from lvdtool.curation.representatives import PolicyInputs, duplicate_representatives, policy_scores
from lvdtool.curation.search import PoolSearcher, SearchConfig
from lvdtool.curation.sparse_components import SparseComponents
from lvdtool.curation.stage_ranks import StageRanks, join_ranks
from lvdtool.curation.work_state import WorkState
from lvdtool.errors import ConfigError, InputError
from lvdtool.index import select_backend

SELECTION_SCHEMA = pa.schema([("key", pa.string()), ("group", pa.int64()), ("reason", pa.string())])


@dataclass
class CalibrationConfig:
    pairs: int = 8  # pairs shown just above and just below each threshold
    band: float = 0.1  # neighbour pairs down to threshold - band are kept for the view
    cell: int = 128  # thumbnail size in pixels


@dataclass
class DedupConfig:
    embeddings: str = MISSING
    out: str = MISSING
    against: list[str] = field(default_factory=list)
    k: int = 64
    threshold: float = 0.6
    against_threshold: float = 0.45
    representative: str = "highest_resolution"
    block_rows: int = 1_000_000
    search: SearchConfig = field(default_factory=SearchConfig)
    engine: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    verify: str = "size"  # inputs checked before reading: size (sizes, row counts) or full (+ sha256; reads them)


def _check(cfg: DedupConfig) -> None:
    if cfg.k < 1 or cfg.block_rows < 1:
        raise ConfigError(f"k and block_rows must be >= 1, got k={cfg.k}, block_rows={cfg.block_rows}")
    for name in ("threshold", "against_threshold"):
        if not -1.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name}: a cosine threshold in [-1, 1), got {getattr(cfg, name)}")
    if cfg.calibration.pairs < 0 or cfg.calibration.band < 0:
        raise ConfigError("calibration.pairs and calibration.band must be >= 0")
    check_level("verify", cfg.verify)


def _open_benchmarks(benchmarks: list[Benchmark], dim: int) -> list[EmbeddingsArtifact]:
    arts = []
    for b in benchmarks:
        art = EmbeddingsArtifact(b.path)
        if art.dim != dim:
            raise InputError(f"{b.path}: benchmark {b.name} has {art.dim}-d embeddings, the pool {dim}-d (use the same descriptor)")
        arts.append(art)
    return arts


def _write_shard(out: ShardedOutput, emb: EmbeddingsArtifact, shard: ShardRows, decision: DedupDecision) -> None:
    """One selection shard: O(rows of the shard) (its keys, its kept rows, their labels)."""
    rows = decision.kept_in(shard.start, shard.stop)
    keys = read_shard_keys(emb, shard.name, shard.stop - shard.start)[rows - shard.start]
    table = pa.table({"key": as_string_array(keys), "group": decision.components.labels_of(rows),
                      "reason": pa.array(["kept"] * len(rows), pa.string())}, schema=SELECTION_SCHEMA)
    rel = f"shards/{shard.name}.parquet"
    tmp = out.temp(rel)
    pq.write_table(table, tmp, compression="zstd")
    out.commit(shard.name, {rel: tmp}, rows=len(rows), stats={"kept": len(rows)})


def _decision(work: WorkState, emb: EmbeddingsArtifact, cfg: DedupConfig, pairs: Pairs, touched, images) -> None:
    """Components, representatives and the keep decision (rank 0), stored under `_work/` for every rank."""
    def components() -> tuple[dict, dict]:
        return sparse_duplicate_components(emb.num_vectors, pairs, cfg.threshold).arrays(), {}

    comps = SparseComponents.from_arrays(work.cached("components_sparse", components)[0])

    def keep() -> tuple[dict, dict]:
        keys = keys_of_rows(emb, comps.nodes)  # only the rows of duplicate components
        reps = duplicate_representatives(comps, keys, policy_scores(cfg.representative, PolicyInputs(keys=keys, images=images)))
        d = decide(comps, reps, touched)
        return {"rep_rows": d.rep_rows, "removed": d.removed, "removed_code": d.removed_code}, {}

    work.cached("decision", keep)


def _load_decision(work: WorkState, names: list[str]) -> DedupDecision:
    comps = SparseComponents.from_arrays(work.load("components_sparse")[0])
    arrays = work.load("decision")[0]
    rep_roots, _ = comps.duplicate_roots()
    return DedupDecision(comps, rep_roots, arrays["rep_rows"], arrays["removed"], arrays["removed_code"].astype(np.int8), names)


def run(cfg: DedupConfig, resolved: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    _check(cfg)
    ranks = join_ranks("dedup")
    try:
        return _run(cfg, resolved, overwrite, ranks)
    finally:
        ranks.close()


def _run(cfg: DedupConfig, resolved: dict[str, Any], overwrite: bool, ranks: StageRanks) -> dict[str, Any]:
    emb = EmbeddingsArtifact(cfg.embeddings)
    benchmarks = parse_against(cfg.against)
    eval_arts = _open_benchmarks(benchmarks, emb.dim)
    inputs = [input_ref(cfg.embeddings, emb.manifest, role="embeddings")]
    inputs += [input_ref(b.path, a.manifest, role=f"against:{b.name}") for b, a in zip(benchmarks, eval_arts)]

    def check_inputs() -> None:
        # before reading: the shards against their markers, and the images the pool was embedded from
        for path, art in [(cfg.embeddings, emb)] + [(b.path, a) for b, a in zip(benchmarks, eval_arts)]:
            verify_input(path, art.manifest, cfg.verify)
        checked_images(cfg.embeddings, emb.manifest)

    ranks.on_main(check_inputs)
    images, images_ref = emb.manifest.extra.get("images"), images_input(emb.manifest)
    backend = select_backend(cfg.device, cfg.engine, cfg.precision)  # before the output exists

    def open_out(overwrite: bool) -> ShardedOutput:
        return ShardedOutput(cfg.out, kind="selection", stage="dedup", config=resolved, inputs=inputs, overwrite=overwrite,
                             ranks=ranks.info, resume_ignores=("verify",))

    # rank 0 starts (or clears) the output first, the others then join it
    out = ranks.on_main(lambda: open_out(overwrite))
    out = out if ranks.is_main else open_out(False)
    if out.already_complete:
        console.print(f"{cfg.out}: already complete, nothing to do")
        return out.manifest.stats
    work = WorkState(out.dir)
    searcher = PoolSearcher(emb, cfg.search, backend)
    searcher.load_or_build(work.dir / "index.faiss", ranks)
    keep_above = cfg.threshold - cfg.calibration.band
    n = emb.num_vectors

    with progress() as bar:
        task = bar.add_task("dedup: k-NN graph", total=n)
        compute_neighbour_blocks(searcher, cfg.k, keep_above, cfg.block_rows, work, ranks.owns, lambda rows: bar.advance(task, rows))
    ranks.barrier()

    names = [b.name for b in benchmarks]
    state: dict[str, Any] = {}

    def global_steps() -> None:
        pairs = load_neighbour_pairs(n, cfg.block_rows, work)
        eval_pairs = []
        for b, art in zip(benchmarks, eval_arts):
            def match(art=art) -> tuple[dict, dict]:
                return eval_pool_pairs(searcher, art, cfg.k, cfg.against_threshold - cfg.calibration.band).arrays(), {}

            eval_pairs.append(Pairs.from_arrays(work.cached(f"against-{b.name}", match)[0]))
        touched = [(b.name, found.above(cfg.against_threshold).b) for b, found in zip(benchmarks, eval_pairs)]
        _decision(work, emb, cfg, pairs, touched, images)
        decision = _load_decision(work, names)

        def similarities() -> tuple[dict, dict]:
            return removed_similarities(decision, emb, eval_arts, backend, cfg.search.chunk_rows, work.dir / "rep_vectors.npy"), {}

        state.update(pairs=pairs, eval_pairs=eval_pairs, removed=work.cached("removed", similarities)[0])

    ranks.on_main(global_steps)
    decision = _load_decision(work, names)

    for index, shard in enumerate(shard_rows(emb)):
        if ranks.owns(index) and not out.is_done(shard.name):
            _write_shard(out, emb, shard, decision)
    ranks.barrier()

    def finalize(records) -> dict[str, Any]:
        pairs, eval_pairs, removed = state["pairs"], state["eval_pairs"], state["removed"]
        eval_keys = [keys_of_rows(a, np.arange(a.num_vectors)) for a in eval_arts]
        write_removed(removed_table(decision, emb, removed["rows"], removed["similarity"], removed["eval_row"], eval_keys),
                      out.dir / "removed.parquet")
        stats = graph_stats(decision, len(pairs.above(cfg.threshold)))
        stats.pop("kept")  # summed from the shards
        stats["removed"] = decision.removed_counts()
        stats["benchmarks"] = benchmark_stats(decision, eval_pairs, [a.num_vectors for a in eval_arts], cfg.against_threshold)
        pool_images = ImageLookup(images, images_ref.fingerprint if images_ref else None)
        pool_keys = RowKeys(emb)
        views = [CalibrationView("calibration.png", "self", pairs, cfg.threshold, pool_keys, pool_keys, pool_images, pool_images)]
        views += [CalibrationView(f"calibration_{b.name}.png", f"{b.name} vs pool", found, cfg.against_threshold, RowKeys(art),
                                  pool_keys, ImageLookup.of_embeddings(art.manifest), pool_images)
                  for b, art, found in zip(benchmarks, eval_arts, eval_pairs)]
        pictures, notes = write_calibration_views(out.dir / "report", views, cfg.calibration.pairs, cfg.calibration.cell)
        write_dedup_report(out.dir / "report", {**stats, "kept": decision.num_kept}, pictures, notes)
        return stats

    extra = {"images": images, "images_fingerprint": images_ref.fingerprint if images_ref else None,
             "embeddings": str(Path(cfg.embeddings).resolve()), "descriptor": emb.manifest.extra.get("model"),
             "threshold": cfg.threshold, "against_threshold": cfg.against_threshold, "representative": cfg.representative,
             "work": {"reused": work.reused, "computed": work.computed}}
    finalized = ranks.on_main(lambda: out.try_finalize([s.name for s in shard_rows(emb)], finalize=finalize, extra=extra))
    out.manifest = read_manifest(out.dir)
    stats = out.manifest.stats
    if ranks.is_main:
        print_summary(f"dedup -> {cfg.out}", {
            "images": n, "pairs above threshold": stats.get("pairs", 0), "components": stats.get("components", 0),
            "kept": stats.get("kept", 0), "removed": stats.get("removed", {}),
            "ranks": ranks.world_size,
            "work reused": f"{len(work.reused)} of {len(work.reused) + len(work.computed)} steps",
            "removed table": str(Path(cfg.out) / "removed.parquet"),
            "manifest": str(Path(cfg.out) / "manifest.json") if finalized else "not written (another process is finalizing)",
        })
    return stats


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    cfg, resolved = compose_config("dedup", overrides, DedupConfig)
    return run(cfg, resolved, overwrite=overwrite)
