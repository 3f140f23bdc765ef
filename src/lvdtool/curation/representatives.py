"""Which image of a duplicate component is kept: a registry of representative policies.

A policy maps the rows' keys (and the images artifact) to score arrays, most important first;
the row with the highest scores in each component is kept, ties broken by the smallest key, so
the choice never depends on row order or engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.errors import ArtifactError, ConfigError


@dataclass
class PolicyInputs:
    keys: np.ndarray  # str, one per row
    images: str | None  # the images artifact named by the embeddings manifest (may be absent)


PolicyFn = Callable[[PolicyInputs], list[np.ndarray]]
REPRESENTATIVE_POLICIES: dict[str, PolicyFn] = {}


def register_policy(name: str) -> Callable[[PolicyFn], PolicyFn]:
    def wrap(fn: PolicyFn) -> PolicyFn:
        REPRESENTATIVE_POLICIES[name] = fn
        return fn

    return wrap


@register_policy("first")
def first_by_key(inputs: PolicyInputs) -> list[np.ndarray]:
    """No score: the smallest key of each component (the first ingested, for crawl-ingest keys)."""
    return []


def _index_columns(images: str | None, columns: list[str]) -> dict[str, np.ndarray]:
    if not images or not Path(images).exists():
        raise ConfigError(
            f"representative=highest_resolution reads the images index, but the images artifact {images!r} "
            "named in the embeddings manifest (extra.images) is missing; use representative=first"
        )
    table = ImagesArtifact(images).read_index()
    present = [c for c in columns if c in table.column_names]
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in ["key", *present]}


@register_policy("highest_resolution")
def highest_resolution(inputs: PolicyInputs) -> list[np.ndarray]:
    """Most stored pixels (width x height in the images index); then most original pixels, which
    separates copies that ingest resized to the same size."""
    cols = _index_columns(inputs.images, ["width", "height", "orig_width", "orig_height"])
    lookup = {k: i for i, k in enumerate(cols["key"])}
    pos = np.array([lookup.get(k, -1) for k in inputs.keys], dtype=np.int64)
    if np.any(pos < 0):
        missing = inputs.keys[int(np.flatnonzero(pos < 0)[0])]
        raise ArtifactError(f"{inputs.images}: key {missing} of the embeddings is not in the images index")

    def pixels(w: str, h: str) -> np.ndarray:
        if w not in cols or h not in cols:
            return np.zeros(len(pos), np.int64)
        wv = np.nan_to_num(cols[w][pos].astype(np.float64))
        hv = np.nan_to_num(cols[h][pos].astype(np.float64))
        return (wv * hv).astype(np.int64)

    return [pixels("width", "height"), pixels("orig_width", "orig_height")]


def policy_scores(name: str, inputs: PolicyInputs) -> list[np.ndarray]:
    fn = REPRESENTATIVE_POLICIES.get(name)
    if fn is None:
        raise ConfigError(f"representative: unknown policy {name!r} (known: {', '.join(REPRESENTATIVE_POLICIES)})")
    return fn(inputs)


def choose_representatives(labels: np.ndarray, keys: np.ndarray, scores: list[np.ndarray]) -> np.ndarray:
    """Row of the representative of each component 0..max(labels): highest scores, then smallest key."""
    labels = np.asarray(labels, dtype=np.int64)
    if not labels.size:
        return np.zeros(0, np.int64)
    key_rank = np.argsort(np.argsort(keys, kind="stable"), kind="stable")
    # np.lexsort: the last key is the primary one
    order = np.lexsort((key_rank, *[-np.asarray(s) for s in reversed(scores)], labels))
    sorted_labels = labels[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    reps = np.full(int(labels.max()) + 1, -1, dtype=np.int64)
    reps[sorted_labels[first]] = order[first]
    return reps
