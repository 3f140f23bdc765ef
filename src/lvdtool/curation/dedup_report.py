"""Dedup outputs besides the kept selection: the table of removed keys and the report folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lvdtool.artifacts.embeddings import EmbeddingsArtifact
from lvdtool.artifacts.atomic import atomic_write_bytes, atomic_write_json
from lvdtool.artifacts.tables import write_parquet
from lvdtool.curation.dedup_decision import FIRST_BENCHMARK, DedupDecision
from lvdtool.curation.keyed_rows import as_string_array, keys_of_rows
from lvdtool.eval.metrics import markdown_table

REMOVED_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("group", pa.int64()),
        ("representative", pa.string()),
        ("similarity", pa.float32()),
        ("reason", pa.string()),
        ("eval_key", pa.string()),
    ]
)


def removed_table(
    decision: DedupDecision,
    emb: EmbeddingsArtifact,
    rows: np.ndarray,
    similarity: np.ndarray,
    eval_rows: np.ndarray,
    eval_keys: list[np.ndarray],
) -> pa.Table:
    """One row per removed key, sorted by key. similarity: to the representative (near_duplicate) or to
    the nearest image of the benchmark (contaminated); eval_key names that image. Keys are read only
    for the removed rows and their representatives, as bytes (no Python string per row)."""
    codes = decision.codes_of(rows)
    groups = decision.components.labels_of(rows)
    reps = decision.representative_of(rows)
    width = max([k.dtype.itemsize for k in eval_keys] + [1])
    eval_key = np.zeros(len(rows), dtype=f"S{width}")
    has_eval = np.zeros(len(rows), dtype=bool)
    for i, keys in enumerate(eval_keys):
        mine = (codes == FIRST_BENCHMARK + i) & (eval_rows >= 0)
        eval_key[mine] = keys[eval_rows[mine]]
        has_eval |= mine
    reasons = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(decision.reason_names()))
    table = pa.table(
        {
            "key": as_string_array(keys_of_rows(emb, rows)),
            "group": groups.astype(np.int64),
            "representative": as_string_array(keys_of_rows(emb, reps)),
            "similarity": np.asarray(similarity, np.float32),
            "reason": reasons.dictionary_decode(),
            "eval_key": as_string_array(eval_key, has_eval),
        },
        schema=REMOVED_SCHEMA,
    )
    return table.sort_by("key")


def write_removed(table: pa.Table, path: Path) -> None:
    write_parquet(table, path)


def write_dedup_report(report_dir: Path, stats: dict[str, Any], pictures: list[str], notes: list[str]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_dir / "report.json", stats)
    lines = ["# Deduplication report", ""]
    overview = [{"what": k, "count": v} for k, v in stats.items() if isinstance(v, (int, float))]
    lines.append(markdown_table(overview, ["what", "count"]))
    removed = [{"reason": k, "images": v} for k, v in stats.get("removed", {}).items()]
    if removed:
        lines += ["## Removed", "", markdown_table(removed, ["reason", "images"])]
    bench = [{"benchmark": name, **vals} for name, vals in stats.get("benchmarks", {}).items()]
    if bench:
        columns = ["benchmark", "eval_images", "matched_pairs", "matched_pool_images", "components", "images_in_components", "removed"]
        lines += ["## Decontamination per benchmark", "", markdown_table(bench, columns)]
    if pictures:
        lines += ["## Threshold calibration", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    atomic_write_bytes(report_dir / "report.md", "\n".join(lines).encode())

