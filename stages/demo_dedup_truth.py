"""How a demo dedup run did against the near-duplicates stages/demo_data.py planted.

Usage: python stages/demo_dedup_truth.py IMAGES DEDUP [--json]
IMAGES: the demo's crawl-ingested images artifact (data/demo/raw); DEDUP: an `lvd dedup` output on its
embeddings. Every photo NAME.jpg was planted with NAME_dup_small.jpg and NAME_dup_crop.jpg; the 60
synthetic scenes and the other photos are distinct. A removed image is right when its component's kept
representative is a copy of the same photo, wrong otherwise (a distinct scene or photo thrown away).
Prints one line (or, with --json, the counts as JSON).
"""
from __future__ import annotations

import glob
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_COPY = re.compile(r"_dup_(small|crop)$")


def photo_of(source: str) -> str:
    """The planted group of a demo file: the photo it copies (or itself)."""
    return _COPY.sub("", Path(source).stem)


def dedup_truth(images: Path, dedup: Path) -> dict[str, int | float]:
    index = pa.concat_tables([pq.read_table(p, columns=["key", "source", "status"])
                              for p in sorted(glob.glob(str(images / "shards" / "*.parquet")))])
    group = {k: photo_of(s) for k, s, st in zip(*(index.column(c).to_pylist() for c in ("key", "source", "status")))
             if st == "ok"}
    removed = pq.read_table(dedup / "removed.parquet", columns=["key", "representative", "reason"]).to_pylist()
    removed = [r for r in removed if r["reason"] == "near_duplicate"]
    right = sum(group[r["key"]] == group[r["representative"]] for r in removed)
    sizes = Counter(group.values())
    planted = sum(n - 1 for n in sizes.values())  # what a perfect dedup removes: all but one of each photo's copies
    return {"images": len(group), "planted": planted, "removed": len(removed), "removed_copies": right,
            "removed_distinct": len(removed) - right,
            "precision": round(100 * right / len(removed), 1) if removed else 100.0,
            "recall": round(100 * right / planted, 1) if planted else 100.0}


def describe(t: dict) -> str:
    return (f"dedup on the demo's planted copies: removed {t['removed']} of {t['images']} images, "
            f"{t['removed_copies']} of the {t['planted']} planted copies (recall {t['recall']:.1f}%) "
            f"and {t['removed_distinct']} distinct images (precision {t['precision']:.1f}%)")


if __name__ == "__main__":
    truth = dedup_truth(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(truth) if "--json" in sys.argv[3:] else describe(truth))
