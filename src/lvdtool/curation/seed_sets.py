"""Seed sets: curated embeddings that pull pool images into the selection (DINOv2 retrieval).

Named sets live in `configs/seed/<name>.yaml` (path, mode, k, cap); `--seed-path` adds an
unnamed one. Mode `auto` picks sample-based retrieval (k nearest pool images per seed image) for
sets larger than `large_seed_threshold` and cluster-based sampling for smaller ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.errors import ConfigError, InputError

MODES = ("auto", "sample", "cluster")


@dataclass
class SeedSetConfig:
    path: str = ""  # embeddings artifact of the seed images
    mode: str = "auto"  # auto | sample (k-NN per seed image) | cluster (sample pool clusters linked to seeds)
    k: int | None = None  # neighbours per seed image (sample mode); null: retrieval.k
    cap: int | None = None  # most images taken for this set; null: retrieval.cap in cluster mode, none in sample mode
    per_cluster: int | None = None  # images sampled per linked cluster (cluster mode); null: retrieval.per_cluster
    min_seed_images: int | None = None  # a cluster is linked with MORE seed images than this; null: retrieval's
    expected_size: int | None = None  # images in the full set (used by --dry-run when the artifact is absent)


@dataclass
class RetrievalDefaults:
    large_seed_threshold: int = 1_000_000  # seed sets with more images use sample mode (auto)
    k: int = 4
    cap: int | None = 1_000_000  # per seed set in cluster mode
    pool_clusters: int = 100_000
    per_cluster: int = 10_000
    min_seed_images: int = 3


@dataclass
class SeedSet:
    """A seed set with every default resolved."""

    name: str
    path: str
    mode: str  # sample | cluster
    k: int
    cap: int | None
    per_cluster: int
    min_seed_images: int
    size: int
    artifact: EmbeddingsArtifact | None  # None only in a dry run with the artifact absent


def _unique_name(name: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "seed"
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    return candidate


def resolve_seed_sets(
    names: list[str],
    paths: list[str],
    named: dict[str, SeedSetConfig],
    defaults: RetrievalDefaults,
    allow_missing: bool = False,
) -> list[SeedSet]:
    """Named sets (in the order given), then unnamed paths (named after their folder)."""
    entries: list[tuple[str, SeedSetConfig]] = []
    for name in names:
        if name not in named:
            raise ConfigError(f"seed: no seed set {name!r} (configs/seed/<name>.yaml; known: {', '.join(sorted(named))})")
        if any(name == n for n, _ in entries):
            raise ConfigError(f"seed: {name!r} given twice")
        entries.append((name, named[name]))
    taken = {n for n, _ in entries}
    for p in paths:
        name = _unique_name(Path(str(p).rstrip("/")).name, taken)
        taken.add(name)
        entries.append((name, SeedSetConfig(path=str(p))))
    return [_resolve(name, cfg, defaults, allow_missing) for name, cfg in entries]


def _resolve(name: str, cfg: SeedSetConfig, defaults: RetrievalDefaults, allow_missing: bool) -> SeedSet:
    if cfg.mode not in MODES:
        raise ConfigError(f"seed_sets.{name}.mode: expected one of {', '.join(MODES)}, got {cfg.mode!r}")
    if not cfg.path:
        raise ConfigError(f"seed_sets.{name}.path: not set (an embeddings artifact of the seed images)")
    artifact = None
    if Path(cfg.path).exists() or not allow_missing:
        if not Path(cfg.path).exists():
            raise InputError(f"seed_sets.{name}.path: {cfg.path} not found (embed the seed images first, or override the path)")
        artifact = EmbeddingsArtifact(cfg.path)
        size = artifact.num_vectors
    else:
        size = int(cfg.expected_size or 0)
    mode = cfg.mode if cfg.mode != "auto" else ("sample" if size > defaults.large_seed_threshold else "cluster")
    k = cfg.k if cfg.k is not None else defaults.k
    per_cluster = cfg.per_cluster if cfg.per_cluster is not None else defaults.per_cluster
    min_seed = cfg.min_seed_images if cfg.min_seed_images is not None else defaults.min_seed_images
    cap = cfg.cap if cfg.cap is not None else (defaults.cap if mode == "cluster" else None)
    if k < 1 or per_cluster < 1 or min_seed < 0 or (cap is not None and cap < 0):
        raise ConfigError(f"seed_sets.{name}: need k >= 1, per_cluster >= 1, min_seed_images >= 0, cap >= 0")
    return SeedSet(name=name, path=cfg.path, mode=mode, k=k, cap=cap, per_cluster=per_cluster,
                   min_seed_images=min_seed, size=size, artifact=artifact)
