"""The threshold-calibration view: pairs just above and just below a cosine threshold, as images.

Users look at it to set the threshold for their descriptor: above the line should be copies,
below it distinct images. Each row shows one pair above (left) and one pair below (right),
the pairs closest to the threshold first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lvdtool.curation.duplicate_graph import Pairs
from lvdtool.curation.image_lookup import ImageLookup, placeholder, tile
from lvdtool.eval.contact_sheet import contact_sheet, save_png


@dataclass
class NearThreshold:
    above: Pairs  # sim > threshold, closest first
    below: Pairs  # sim <= threshold, closest first


def pairs_near_threshold(pairs: Pairs, threshold: float, count: int) -> NearThreshold:
    """The `count` pairs just above and the `count` just below `threshold` (ties by row ids)."""
    up = pairs.sim > threshold
    order_up = np.lexsort((pairs.b[up], pairs.a[up], pairs.sim[up]))[:count]
    order_down = np.lexsort((pairs.b[~up], pairs.a[~up], -pairs.sim[~up]))[:count]

    def take(mask: np.ndarray, order: np.ndarray) -> Pairs:
        return Pairs(pairs.a[mask][order], pairs.b[mask][order], pairs.sim[mask][order])

    return NearThreshold(above=take(up, order_up), below=take(~up, order_down))


def draw_calibration(
    near: NearThreshold,
    keys_a: np.ndarray,
    keys_b: np.ndarray,
    images_a: ImageLookup,
    images_b: ImageLookup,
    threshold: float,
    title: str,
    path: str | Path,
    cell: int = 128,
) -> None:
    """Write the PNG; `keys_a`/`keys_b` map pair ends to keys (the same array for a self graph)."""
    wanted_a = [keys_a[i] for i in np.concatenate([near.above.a, near.below.a])]
    wanted_b = [keys_b[i] for i in np.concatenate([near.above.b, near.below.b])]
    got_a, got_b = images_a.fetch(wanted_a), images_b.fetch(wanted_b)
    rows = max(len(near.above), len(near.below), 1)
    items = []
    for r in range(rows):
        for side in (near.above, near.below):
            if r < len(side):
                ka, kb = str(keys_a[side.a[r]]), str(keys_b[side.b[r]])
                items.append((tile(got_a, ka, cell), f"{side.sim[r]:.3f} {ka}"))
                items.append((tile(got_b, kb, cell), kb))
            else:
                items += [(placeholder("no pair", cell), ""), (placeholder("no pair", cell), "")]
    heading = f"{title}: left just above {threshold:g} (duplicates), right just below (kept apart)"
    save_png(contact_sheet(items, cell=cell, cols=4, title=heading), path)


@dataclass
class CalibrationView:
    """One picture: pairs between set A (rows `pairs.a`) and set B (rows `pairs.b`) around a threshold."""

    file: str
    title: str
    pairs: Pairs
    threshold: float
    keys_a: np.ndarray
    keys_b: np.ndarray
    images_a: ImageLookup
    images_b: ImageLookup


def write_calibration_views(report_dir: Path, views: list[CalibrationView], count: int, cell: int) -> tuple[list[str], list[str]]:
    """Draw every view; returns (picture file names, notes about images that could not be shown)."""
    if count == 0:
        return [], []
    report_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    for view in views:
        for side, lookup in (("A", view.images_a), ("B", view.images_b)):
            if not lookup.available:
                note = f"{view.title}: images not shown ({lookup.problem})"
                if note not in notes:
                    notes.append(note)
        near = pairs_near_threshold(view.pairs, view.threshold, count)
        draw_calibration(near, view.keys_a, view.keys_b, view.images_a, view.images_b, view.threshold, view.title,
                         report_dir / view.file, cell)
    return [v.file for v in views], notes
