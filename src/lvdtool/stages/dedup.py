"""`lvd dedup`: embeddings artifact -> selection of one image per near-duplicate component.

DINOv2's method: the k nearest neighbours of every image (k = 64), edges above a cosine
threshold (0.6), connected components, one representative per component; `--against` eval sets
remove every component with a pool image above 0.45 of an eval image. The global steps (neighbour
blocks, components, eval matches, similarities of removed rows) are saved under `_work/`; the kept
keys are then written as one selection shard per embeddings shard.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import MISSING

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.artifacts.manifest import input_ref
from lvdtool.artifacts.ranks import RankInfo
from lvdtool.artifacts.sharded_output import ShardedOutput
from lvdtool.config import compose_config
from lvdtool.console import console, print_summary, progress
from lvdtool.curation.calibration import CalibrationView, write_calibration_views
from lvdtool.curation.decontaminate import Benchmark, eval_pool_pairs, parse_against, touched_components
from lvdtool.curation.dedup_decision import benchmark_stats, decide, graph_stats, removed_similarities
from lvdtool.curation.dedup_report import removed_table, write_dedup_report, write_removed
from lvdtool.curation.duplicate_graph import Pairs, duplicate_components, self_neighbour_pairs
from lvdtool.curation.image_lookup import ImageLookup
from lvdtool.curation.keyed_rows import artifact_keys, shard_rows
from lvdtool.curation.representatives import PolicyInputs, choose_representatives, policy_scores
from lvdtool.curation.search import PoolSearcher, SearchConfig
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


def _check(cfg: DedupConfig) -> None:
    if cfg.k < 1 or cfg.block_rows < 1:
        raise ConfigError(f"k and block_rows must be >= 1, got k={cfg.k}, block_rows={cfg.block_rows}")
    for name in ("threshold", "against_threshold"):
        if not -1.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name}: a cosine threshold in [-1, 1), got {getattr(cfg, name)}")
    if cfg.calibration.pairs < 0 or cfg.calibration.band < 0:
        raise ConfigError("calibration.pairs and calibration.band must be >= 0")


def _open_benchmarks(benchmarks: list[Benchmark], dim: int) -> list[EmbeddingsArtifact]:
    arts = []
    for b in benchmarks:
        art = EmbeddingsArtifact(b.path)
        if art.dim != dim:
            raise InputError(f"{b.path}: benchmark {b.name} has {art.dim}-d embeddings, the pool {dim}-d (use the same descriptor)")
        arts.append(art)
    return arts


def _single_process() -> RankInfo:
    # A global step: one process does it all whatever the launcher says; a fresh run id per launch so a
    # finalize lock left by a killed run never blocks the next one.
    return RankInfo(rank=0, world_size=1, run_id=f"dedup-{os.getpid()}-{time.time_ns()}")


def run(cfg: DedupConfig, resolved: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    _check(cfg)
    emb = EmbeddingsArtifact(cfg.embeddings)
    benchmarks = parse_against(cfg.against)
    eval_arts = _open_benchmarks(benchmarks, emb.dim)
    inputs = [input_ref(cfg.embeddings, emb.manifest, role="embeddings")]
    inputs += [input_ref(b.path, a.manifest, role=f"against:{b.name}") for b, a in zip(benchmarks, eval_arts)]
    out = ShardedOutput(cfg.out, kind="selection", stage="dedup", config=resolved, inputs=inputs, overwrite=overwrite,
                        ranks=_single_process())
    if out.already_complete:
        console.print(f"{cfg.out}: already complete, nothing to do")
        return out.manifest.stats
    backend = select_backend(cfg.device, cfg.engine, cfg.precision)
    keys = artifact_keys(emb)
    images = emb.manifest.extra.get("images")
    work = WorkState(out.dir)
    searcher = PoolSearcher(emb, cfg.search, backend)
    keep_above = cfg.threshold - cfg.calibration.band

    with progress() as bar:
        task = bar.add_task("dedup: k-NN graph", total=emb.num_vectors)
        pairs = self_neighbour_pairs(searcher, cfg.k, keep_above, cfg.block_rows, work, lambda n: bar.advance(task, n))

    def components() -> tuple[dict, dict]:
        return {"labels": duplicate_components(len(keys), pairs, cfg.threshold)}, {}

    labels = work.cached("components", components)[0]["labels"]

    eval_pairs: list[Pairs] = []
    touched = []
    for b, art in zip(benchmarks, eval_arts):
        def match(art=art) -> tuple[dict, dict]:
            return eval_pool_pairs(searcher, art, cfg.k, cfg.against_threshold - cfg.calibration.band).arrays(), {}

        found = Pairs.from_arrays(work.cached(f"against-{b.name}", match)[0])
        eval_pairs.append(found)
        touched.append((b.name, touched_components(labels, found.above(cfg.against_threshold).b)))

    scores = policy_scores(cfg.representative, PolicyInputs(keys=keys, images=images))
    decision = decide(labels, choose_representatives(labels, keys, scores), touched)

    def similarities() -> tuple[dict, dict]:
        return removed_similarities(decision, emb, eval_arts, backend, cfg.search.chunk_rows), {}

    removed = work.cached("removed", similarities)[0]

    for shard in shard_rows(emb):
        if out.is_done(shard.name):
            continue
        rows = decision.kept_rows[(decision.kept_rows >= shard.start) & (decision.kept_rows < shard.stop)]
        table = pa.table({"key": keys[rows].tolist(), "group": decision.labels[rows], "reason": ["kept"] * len(rows)},
                         schema=SELECTION_SCHEMA)
        rel = f"shards/{shard.name}.parquet"
        tmp = out.temp(rel)
        pq.write_table(table, tmp, compression="zstd")
        out.commit(shard.name, {rel: tmp}, rows=len(rows), stats={"kept": len(rows)})

    def finalize(records) -> dict[str, Any]:
        eval_keys = [artifact_keys(a) for a in eval_arts]
        write_removed(removed_table(decision, keys, removed["rows"], removed["similarity"], removed["eval_row"], eval_keys),
                      out.dir / "removed.parquet")
        stats = graph_stats(decision, len(pairs.above(cfg.threshold)))
        stats.pop("kept")  # summed from the shards
        stats["removed"] = decision.removed_counts()
        stats["benchmarks"] = benchmark_stats(decision, eval_pairs, [a.num_vectors for a in eval_arts], cfg.against_threshold)
        pool_images = ImageLookup(images)
        views = [CalibrationView("calibration.png", "self", pairs, cfg.threshold, keys, keys, pool_images, pool_images)]
        views += [CalibrationView(f"calibration_{b.name}.png", f"{b.name} vs pool", found, cfg.against_threshold, ekeys, keys,
                                  ImageLookup(art.manifest.extra.get("images")), pool_images)
                  for b, art, ekeys, found in zip(benchmarks, eval_arts, eval_keys, eval_pairs)]
        pictures, notes = write_calibration_views(out.dir / "report", views, cfg.calibration.pairs, cfg.calibration.cell)
        write_dedup_report(out.dir / "report", {**stats, "kept": len(decision.kept_rows)}, pictures, notes)
        return stats

    extra = {"images": images, "embeddings": str(Path(cfg.embeddings).resolve()), "descriptor": emb.manifest.extra.get("model"),
             "threshold": cfg.threshold, "against_threshold": cfg.against_threshold, "representative": cfg.representative,
             "work": {"reused": work.reused, "computed": work.computed}}
    finalized = out.try_finalize([s.name for s in shard_rows(emb)], finalize=finalize, extra=extra)
    stats = out.manifest.stats
    print_summary(f"dedup -> {cfg.out}", {
        "images": len(keys), "pairs above threshold": stats.get("pairs", 0), "components": stats.get("components", 0),
        "kept": stats.get("kept", 0), "removed": stats.get("removed", {}),
        "work reused": f"{len(work.reused)} of {len(work.reused) + len(work.computed)} steps",
        "removed table": str(Path(cfg.out) / "removed.parquet"),
        "manifest": str(Path(cfg.out) / "manifest.json") if finalized else "not written (another process is finalizing)",
    })
    return stats


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    cfg, resolved = compose_config("dedup", overrides, DedupConfig)
    return run(cfg, resolved, overwrite=overwrite)
