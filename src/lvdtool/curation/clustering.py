"""The pool's k-means clustering and the DINOv3-style balanced subset (hierarchical k-means).

Both are global steps stored under `_work/` (centroids, assignments, the hierarchy) and reused
on rerun. Pools that fit in `memory_limit_gb` as float32 are clustered in RAM (any engine);
larger ones stream from the artifact (torch engine; with `fit_sample`, Lloyd runs on a sample and
every row is then assigned in one pass: the recipe for 10^8+ images).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lvdtool.curation.retrieval import SeedResult
from lvdtool.curation.stage_ranks import StageRanks
from lvdtool.curation.work_state import WorkState
from lvdtool.errors import ConfigError, InputError
from lvdtool.index import Hierarchy, KMeansConfig, LevelSpec, balanced_sample, hierarchical_kmeans, spherical_kmeans
from lvdtool.index.hkmeans import check_splits
from lvdtool.index.kmeans_checkpoint import KMeansCheckpoint
from lvdtool.index.vectors import ArrayVectors, VectorSource, to_memory


AUTO_RANDOM_INIT_CLUSTERS = 10_000  # init=auto: kmeans|| below this many clusters, random from here on


@dataclass
class KMeansOptions:
    n_iter: int = 20
    init: str = "auto"  # auto (kmeans|| below 10k clusters, random above: kmeans|| at 10^5+ is k sequential steps) | kmeans|| | random
    fit_sample: int | None = None  # Lloyd on this many random pool images, then assign all
    seed: int = 0
    accumulate: str = "exact"  # exact (fixed-point: the same bytes on any number of ranks) | float32 | float64
    memory_limit_gb: float = 16.0  # pools up to this size (float32) are clustered in RAM (per rank)
    checkpoint_every: int = 5  # Lloyd iterations between checkpoints under _work/ (torch engine)
    engine: str | None = None  # k-means engine (auto | torch | faiss); null: the stage's `engine`


@dataclass
class LevelConfig:
    n_clusters: int = 1000
    n_resampling_steps: int = 0
    sample_size: int = 1
    sampling: str = "closest"  # closest | random
    n_splits: int = 1  # > 1: k-means with n_clusters // n_splits clusters, each then split into up to n_splits


@dataclass
class HKMeansConfig:
    target: int | None = None  # images in the balanced subset
    # Vo et al.'s web-scale tree (levels bottom-up); DINOv3 used 5 levels (200M, 8M, 800k, 100k, 25k).
    levels: list[LevelConfig] = field(default_factory=lambda: [
        LevelConfig(10_000_000, 1, 1, n_splits=100), LevelConfig(500_000, 10, 10), LevelConfig(50_000, 10, 5), LevelConfig(10_000, 10, 3)])
    strategy: str = "random"  # random | closest (to the level-0 centroid)
    split_batch_rows: int = 1 << 20  # points per restart unit of a split level (float32 vectors in RAM)


def kmeans_config(options: KMeansOptions, engine: str, device: str, precision: str, chunk_rows: int) -> KMeansConfig:
    if options.checkpoint_every < 1:
        raise ConfigError(f"kmeans.checkpoint_every: must be >= 1, got {options.checkpoint_every}")
    return KMeansConfig(n_iter=options.n_iter, seed=options.seed, init=options.init, fit_sample=options.fit_sample,
                        chunk_rows=chunk_rows, accumulate=options.accumulate, engine=options.engine or engine, device=device,
                        precision=precision, distributed=None)


def resolve_init(config: KMeansConfig, n_clusters: int) -> KMeansConfig:
    if config.init != "auto":
        return config
    return replace(config, init="random" if n_clusters >= AUTO_RANDOM_INIT_CLUSTERS else "kmeans||")


def in_memory_if_small(source: VectorSource, limit_gb: float, chunk_rows: int) -> VectorSource:
    if source.num_vectors * source.dim * 4 <= limit_gb * (1 << 30):
        return ArrayVectors(to_memory(source, chunk_rows))
    return source


def pool_kmeans(local: VectorSource, total_rows: int, n_clusters: int, config: KMeansConfig, work: WorkState, ranks: StageRanks,
                checkpoint_every: int) -> dict[str, np.ndarray] | None:
    """The pool's k-means on every rank (each passes its own consecutive rows `local`; sums are
    all-reduced), checkpointed under `_work/` every few iterations. Each rank stores the assignment of
    its rows; rank 0 joins them into `_work/pool_kmeans.npz` and returns centroids [C, D], assignment
    [N], similarity [N] (other ranks get None). A stored result is reused on rerun."""
    if n_clusters > total_rows:
        raise ConfigError(f"retrieval.pool_clusters: {n_clusters} clusters need at least as many pool images, "
                          f"the pool has {total_rows}")
    name = "pool_kmeans"
    if not ranks.agree(work.exists(name) and work.load(name) is not None):
        config = resolve_init(config, n_clusters)
        ckpt = KMeansCheckpoint(work.path(f"{name}-checkpoint"), every=checkpoint_every, write=ranks.is_main)
        result = spherical_kmeans(local, n_clusters, config, checkpoint=ckpt)
        part = f"{name}-part{ranks.rank:05d}of{ranks.world_size:05d}"
        work.save(part, {"assignment": result.assignment, "similarity": result.similarity})
        ranks.barrier()

        def join() -> None:
            parts = [work.load(f"{name}-part{r:05d}of{ranks.world_size:05d}")[0] for r in range(ranks.world_size)]
            work.save(name, {"centroids": result.centroids,
                             "assignment": np.concatenate([p["assignment"] for p in parts]),
                             "similarity": np.concatenate([p["similarity"] for p in parts])},
                      {"objective": float(np.mean(np.concatenate([p["similarity"] for p in parts]))), "engine": result.engine,
                       "resumed_from_iteration": ckpt.loaded_iterations})
            work.computed.append(name)
            for r in range(ranks.world_size):
                work.path(f"{name}-part{r:05d}of{ranks.world_size:05d}").unlink(missing_ok=True)

        ranks.on_main(join)
    elif ranks.is_main:
        work.reused.append(name)
    return work.load(name)[0] if ranks.is_main else None


def _save_hierarchy(h: Hierarchy) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for level in range(h.num_levels):
        arrays[f"assignment_{level}"] = h.assignments[level]
        arrays[f"centroids_{level}"] = h.centroids[level]
        arrays[f"similarity_{level}"] = h.similarities[level]
    return arrays


def _load_hierarchy(arrays: dict[str, np.ndarray], levels: int) -> Hierarchy:
    return Hierarchy(assignments=[arrays[f"assignment_{i}"] for i in range(levels)],
                     centroids=[arrays[f"centroids_{i}"] for i in range(levels)],
                     similarities=[arrays[f"similarity_{i}"] for i in range(levels)])


def balanced_subset(
    source: VectorSource, options: HKMeansConfig, config: KMeansConfig, work: WorkState, seed: int
) -> SeedResult:
    """Hierarchical k-means of the pool, then `target` images sampled evenly down the tree (seeded by `seed`)."""
    if options.target is None or options.target < 1:
        raise ConfigError("hkmeans.target: set the number of images of the balanced subset (--target N)")
    if options.target > source.num_vectors:
        raise InputError(f"hkmeans.target: {options.target} exceeds the {source.num_vectors} pool images")
    for i, lv in enumerate(options.levels):
        check_splits(lv.n_clusters, lv.n_splits, f"hkmeans.levels[{i}].n_splits")
    if options.split_batch_rows < 1:
        raise ConfigError(f"hkmeans.split_batch_rows: must be >= 1, got {options.split_batch_rows}")
    specs = [LevelSpec(lv.n_clusters, lv.n_resampling_steps, lv.sample_size, lv.sampling, lv.n_splits)
             for lv in options.levels]
    if not specs:
        raise ConfigError("hkmeans.levels: need at least one level")

    def stored(name: str, fit):
        keys = ("centroids", "assignment", "similarity")
        arrays, _ = work.cached(f"hierarchy-{name}", lambda: (dict(zip(keys, fit())), {}))
        return tuple(arrays[k] for k in keys)

    def compute():
        init = resolve_init(config, specs[0].n_coarse)
        h = hierarchical_kmeans(source, specs, init, level_store=lambda index, fit: stored(f"level{index}", fit),
                                unit_store=stored, split_batch_rows=options.split_batch_rows)
        return _save_hierarchy(h), {}

    hierarchy = _load_hierarchy(work.cached("hierarchy", compute)[0], len(specs))
    rows = balanced_sample(hierarchy, int(options.target), seed=seed, strategy=options.strategy)
    sizes = hierarchy.sizes(hierarchy.num_levels - 1)
    stats = {"mode": "balanced", "target": int(options.target), "levels": [int(s.n_clusters) for s in specs],
             "top_level_largest": int(sizes.max()), "selected": int(len(rows))}
    return SeedResult(rows.astype(np.int64), np.full(len(rows), -1, np.int64),
                      hierarchy.similarities[0][rows].astype(np.float32), stats)
