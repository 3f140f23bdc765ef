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
from lvdtool.curation.keyed_rows import key_bytes
from lvdtool.curation.sparse_components import SparseComponents
from lvdtool.errors import ArtifactError, ConfigError


@dataclass
class PolicyInputs:
    keys: np.ndarray  # str or bytes, one per row (the rows of duplicate components)
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


def _index_columns(images: str | None, keys: np.ndarray, columns: list[str]) -> dict[str, np.ndarray]:
    """`columns` of the images index for `keys` (bytes), by a sorted join shard by shard: memory
    O(len(keys) + one index shard), never a dict of the whole index."""
    if not images or not Path(images).exists():
        raise ConfigError(
            f"representative=highest_resolution reads the images index, but the images artifact {images!r} "
            "named in the embeddings manifest (extra.images) is missing; use representative=first"
        )
    art = ImagesArtifact(images)
    keys = np.asarray(keys).astype(bytes) if np.asarray(keys).dtype.kind != "S" else np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    wanted = keys[order]
    out = {c: np.zeros(len(keys), np.float64) for c in columns}
    found = np.zeros(len(keys), dtype=bool)
    for shard in art.shards:
        if found.all():
            break
        table = art.read_index(shard)
        present = [c for c in columns if c in table.column_names]
        shard_keys = key_bytes(table.column("key"))
        if not len(wanted) or not len(shard_keys):
            continue
        pos = np.minimum(np.searchsorted(wanted, shard_keys), len(wanted) - 1)
        match = np.flatnonzero(wanted[pos] == shard_keys)
        # a key repeated in the wanted list (it cannot be, rows are unique) would take one slot only
        target = order[pos[match]]
        found[target] = True
        for c in present:
            values = table.column(c).to_numpy(zero_copy_only=False)
            out[c][target] = np.nan_to_num(values[match].astype(np.float64))
    if len(keys) and not found.all():
        missing = keys[int(np.flatnonzero(~found)[0])].decode("utf-8", "replace")
        raise ArtifactError(f"{images}: key {missing} of the embeddings is not in the images index")
    return out


@register_policy("highest_resolution")
def highest_resolution(inputs: PolicyInputs) -> list[np.ndarray]:
    """Most stored pixels (width x height in the images index); then most original pixels, which
    separates copies that ingest resized to the same size."""
    cols = _index_columns(inputs.images, inputs.keys, ["width", "height", "orig_width", "orig_height"])

    def pixels(w: str, h: str) -> np.ndarray:
        return (cols[w] * cols[h]).astype(np.int64)

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


def duplicate_representatives(components: SparseComponents, keys: np.ndarray, scores: list[np.ndarray]) -> np.ndarray:
    """Representative row of each duplicate component (order of `components.duplicate_roots()`);
    `keys` and `scores` are per node (`components.nodes`)."""
    if not len(components.nodes):
        return np.zeros(0, np.int64)
    return components.nodes[choose_representatives(components.node_groups(), keys, scores)]
