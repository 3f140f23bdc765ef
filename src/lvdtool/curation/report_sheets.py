"""Report pictures made of images: a few clusters (one row each) and retrieval examples
(a seed image beside the pool images it brought in)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvdtool.curation.image_lookup import ImageLookup, placeholder, tile
from lvdtool.eval.contact_sheet import contact_sheet, save_png


@dataclass
class ExampleRow:
    query_key: str
    query_caption: str
    neighbour_keys: list[str]
    neighbour_captions: list[str]


def clusters_to_show(selected_clusters: np.ndarray, count: int) -> np.ndarray:
    """The `count` clusters holding most selected images (ties: smaller id)."""
    if not selected_clusters.size:
        return np.zeros(0, np.int64)
    sizes = np.bincount(selected_clusters)
    order = np.lexsort((np.arange(len(sizes)), -sizes))
    return order[sizes[order] > 0][:count]


def cluster_sheet(
    clusters: np.ndarray,
    cluster_of: np.ndarray,
    keys: np.ndarray,
    similarity: np.ndarray,
    lookup: ImageLookup,
    per_row: int,
    path: str | Path,
    cell: int = 96,
) -> None:
    """One row per cluster: its selected images most similar to the centroid first."""
    rows: list[list[str]] = []
    for c in clusters:
        members = np.flatnonzero(cluster_of == c)
        members = members[np.lexsort((members, -similarity[members]))][:per_row]
        rows.append([str(keys[m]) for m in members])
    images = lookup.fetch(k for row in rows for k in row)
    items = []
    for c, row in zip(clusters, rows):
        for j in range(per_row):
            if j < len(row):
                items.append((tile(images, row[j], cell), f"c{c} {row[j]}"))
            else:
                items.append((placeholder("", cell), ""))
    title = f"{len(rows)} largest clusters of the selection, one per row (closest to the centroid first)"
    save_png(contact_sheet(items or [(placeholder("empty", cell), "")], cell=cell, cols=per_row, title=title), path)


def retrieval_sheet(
    examples: list[tuple[str, ExampleRow]],
    seed_lookups: dict[str, ImageLookup],
    pool_lookup: ImageLookup,
    neighbours: int,
    path: str | Path,
    cell: int = 96,
) -> None:
    """Rows of (seed set name, example): the seed image, then its retrieved pool images."""
    seed_images = {name: seed_lookups[name].fetch([ex.query_key for n, ex in examples if n == name]) for name in seed_lookups}
    pool_images = pool_lookup.fetch(k for _, ex in examples for k in ex.neighbour_keys)
    items = []
    for name, ex in examples:
        items.append((tile(seed_images.get(name, {}), ex.query_key, cell), f"{name}: {ex.query_caption}"))
        for j in range(neighbours):
            if j < len(ex.neighbour_keys):
                items.append((tile(pool_images, ex.neighbour_keys[j], cell), ex.neighbour_captions[j]))
            else:
                items.append((placeholder("", cell), ""))
    title = "retrieval: seed image (left), then the pool images it brought in"
    save_png(contact_sheet(items or [(placeholder("no examples", cell), "")], cell=cell, cols=neighbours + 1, title=title), path)
