"""report.json and report.md of `lvd curate`: counts per step and per seed set, links to the pictures."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lvdtool.artifacts.atomic import atomic_write_bytes, atomic_write_json
from lvdtool.eval.metrics import markdown_table

SEED_COLUMNS = ["set", "mode", "seed_images", "k", "retrieved", "collisions", "most_hits", "clusters_linked",
                "candidates", "capped_out", "selected", "attributed"]


def steps_table(stats: dict[str, Any]) -> list[dict[str, Any]]:
    pool = stats["pool"]
    rows = [{"step": "pool (embeddings)", "images": pool["images"]}]
    if pool.get("after_selection") is not None:
        rows.append({"step": "pool after the input selection", "images": pool["after_selection"]})
    for name, s in stats.get("sets", {}).items():
        rows.append({"step": f"{name} ({s['mode']})", "images": s["selected"]})
    rows.append({"step": "union (deduplicated)", "images": stats["union"]["selected"]})
    return rows


def write_curate_report(report_dir: Path, stats: dict[str, Any], pictures: list[str], notes: list[str]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_dir / "report.json", {**stats, "pictures": pictures, "notes": notes})
    lines = ["# Curation report", "", "## Images per step", "", markdown_table(steps_table(stats), ["step", "images"])]
    sets = [{"set": name, **s, "attributed": stats["union"]["attributed"].get(name)} for name, s in stats.get("sets", {}).items()]
    if sets:
        present = [c for c in SEED_COLUMNS if any(row.get(c) is not None for row in sets)]
        lines += ["## Per seed set", "", markdown_table(sets, present)]
        lines += ["`collisions`: retrievals of a pool image another query of the same set had already retrieved; "
                  f"`in_several_sets`: {stats['union']['in_several_sets']} images were selected by more than one set "
                  "(attributed to the first).", ""]
    if pictures:
        lines += ["## Pictures", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    atomic_write_bytes(report_dir / "report.md", "\n".join(lines).encode())
