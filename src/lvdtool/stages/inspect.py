"""`lvd inspect`: what an artifact holds, where its records went, and a contact sheet of its images."""
from __future__ import annotations

import random
import re
from pathlib import Path

from rich.table import Table

from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.artifacts.manifest import read_manifest
from lvdtool.artifacts.stats import count
from lvdtool.console import console, print_summary
from lvdtool.errors import ArtifactError, ConfigError
from lvdtool.eval.contact_sheet import contact_sheet, save_png


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("value")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    total = sum(counts.values()) or 1
    for name, n in counts.items():
        table.add_row(name, f"{n:,}", f"{100 * n / total:.1f}%")
    return table


def main(path: Path, grid: Path | None = None, n: int = 48, seed: int = 0) -> dict:
    if n < 1:
        raise ConfigError(f"inspect: --n {n}: must be >= 1 (images in the contact sheet)")
    manifest = read_manifest(path)
    rows = sum(s.get("rows", 0) for s in manifest.shards)
    size = sum(s.get("bytes", 0) for s in manifest.shards)
    summary = {
        "kind": manifest.kind,
        "stage": manifest.stage,
        "complete": manifest.complete,
        "created": manifest.created,
        "lvd_version": manifest.lvd_version,
        "shards": len(manifest.shards),
        "rows": rows,
        "bytes": size,
        "fingerprint": manifest.fingerprint if manifest.complete else "(incomplete)",
    }
    for i, ref in enumerate(manifest.inputs):
        summary[f"input{i}"] = f"{ref.kind} {ref.path} [{ref.fingerprint}]"
    print_summary(f"{path}", summary)
    if manifest.extra:
        print_summary("extra", manifest.extra)
    result = {"summary": summary}
    if manifest.kind == "images" and manifest.complete:
        art = ImagesArtifact(path, manifest)
        index = art.read_index(columns=["key", "status", "error", "label"])
        statuses = count(index.column("status").to_pylist())
        console.print(_counts_table("records per status", statuses))
        errors = [e for s, e in zip(index.column("status").to_pylist(), index.column("error").to_pylist()) if s != "ok" and e]
        if errors:
            # group by the error's shape: keys and numbers folded, so 10k "duplicate of <key>" make one row
            reasons = dict(list(count(re.sub(r"\d+", "#", e)[:90] for e in errors).items())[:15])
            console.print(_counts_table("most common errors", reasons))
        labels = [x for x in index.column("label").to_pylist() if x is not None]
        if labels:
            console.print(_counts_table("labels (top 20)", dict(list(count(labels).items())[:20])))
        result.update(statuses=statuses)
        if grid is not None:
            ok = [k for k, s in zip(index.column("key").to_pylist(), index.column("status").to_pylist()) if s == "ok"]
            if not ok:
                raise ArtifactError(f"{path}: no ok images to draw a grid from")
            picked = set(random.Random(seed).sample(ok, min(n, len(ok))))
            items = []
            for sample in art.iter_samples(keys=picked):
                label = sample.meta.get("label")
                items.append((sample.data, f"{sample.key}" + (f" {label}" if label else "")))
            items.sort(key=lambda it: it[1])
            save_png(contact_sheet(items, title=f"{path} ({len(items)} of {len(ok)} images)"), grid)
            console.print(f"wrote {grid} ({len(items)} images)")
            result["grid"] = str(grid)
    elif manifest.stats:
        print_summary("stats", manifest.stats)
    return result
