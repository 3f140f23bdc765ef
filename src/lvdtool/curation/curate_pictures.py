"""The pictures of the curation report: cluster sizes before/after, a few clusters, retrieval examples."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.curation.image_lookup import ImageLookup
from lvdtool.curation.keyed_rows import RowKeys
from lvdtool.curation.report_plots import cluster_size_histograms
from lvdtool.curation.report_sheets import ExampleRow, cluster_sheet, clusters_to_show, retrieval_sheet
from lvdtool.curation.retrieval import SeedResult
from lvdtool.curation.seed_sets import SeedSet
from lvdtool.curation.union import Union


def _examples(s: SeedSet, result: SeedResult, pool_keys: RowKeys, assignment: np.ndarray, count: int,
              neighbours: int) -> list[ExampleRow]:
    """A few seed images that brought images in, with those images (most similar first)."""
    seed_keys = RowKeys(s.artifact)
    rows: list[ExampleRow] = []
    if s.mode == "sample":
        queries, hits = np.unique(result.query_rows, return_counts=True)
        for q in queries[np.lexsort((queries, -hits))][:count]:  # the seed images that brought in most
            mine = np.flatnonzero(result.query_rows == q)
            mine = mine[np.argsort(-result.similarity[mine], kind="stable")][:neighbours]
            rows.append(ExampleRow(str(seed_keys[q]), str(seed_keys[q]), [str(pool_keys[result.pool_rows[i]]) for i in mine],
                                   [f"{result.similarity[i]:.3f}" for i in mine]))
        return rows
    seed_cluster = result.stats.get("_seed_cluster")
    picked_clusters = np.unique(assignment[result.pool_rows])
    linked_seeds = np.flatnonzero(np.isin(seed_cluster, picked_clusters))
    _, first_per_cluster = np.unique(seed_cluster[linked_seeds], return_index=True)
    for q in np.sort(linked_seeds[first_per_cluster])[:count]:  # one seed image per linked cluster
        c = seed_cluster[q]
        mine = np.flatnonzero(assignment[result.pool_rows] == c)
        mine = mine[np.argsort(-result.similarity[mine], kind="stable")][:neighbours]
        rows.append(ExampleRow(str(seed_keys[q]), f"{seed_keys[q]} c{c}", [str(pool_keys[result.pool_rows[i]]) for i in mine],
                               [f"c{c} {pool_keys[result.pool_rows[i]]}" for i in mine]))
    return rows


def write_pictures(
    report_dir: Path,
    report: Any,
    pool_keys: RowKeys,
    pool_artifact: EmbeddingsArtifact,
    sets: list[SeedSet],
    results: list[SeedResult],
    union: Union,
    clusters: dict[str, np.ndarray],
) -> tuple[list[str], list[str]]:
    report_dir.mkdir(parents=True, exist_ok=True)
    assignment, similarity = clusters["assignment"], clusters["similarity"]
    n_clusters = len(clusters["centroids"])
    before = np.bincount(assignment, minlength=n_clusters)
    after = np.bincount(assignment[union.pool_rows], minlength=n_clusters)
    cluster_size_histograms(before, after, report_dir / "cluster_sizes.png",
                            f"images per pool cluster ({n_clusters:,} clusters), before and after curation")
    pictures = ["cluster_sizes.png"]
    pool_lookup = ImageLookup.of_embeddings(pool_artifact.manifest)
    notes = [] if pool_lookup.available else [f"pool images not shown: {pool_lookup.problem}"]

    selected_clusters = assignment[union.pool_rows]
    shown = clusters_to_show(selected_clusters, report.clusters)
    cluster_sheet(shown, selected_clusters, pool_keys.subset(union.pool_rows), similarity[union.pool_rows], pool_lookup,
                  report.images_per_cluster, report_dir / "clusters.png", report.cell)
    pictures.append("clusters.png")

    examples, lookups = [], {}
    for s, result in zip(sets, results):
        lookups[s.name] = ImageLookup.of_embeddings(s.artifact.manifest)
        if not lookups[s.name].available:
            notes.append(f"seed set {s.name} images not shown: {lookups[s.name].problem}")
        examples += [(s.name, ex) for ex in _examples(s, result, pool_keys, assignment, report.examples, report.neighbours)]
    if sets:
        retrieval_sheet(examples, lookups, pool_lookup, report.neighbours, report_dir / "retrieval.png", report.cell)
        pictures.append("retrieval.png")
    return pictures, notes
