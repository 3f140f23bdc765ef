"""Join the GPU suite's tables into `summary.md`: issue 13's targets with the measured ratios
(met / not met / not measured), then every table. Run by gpu_suite.sh after each part, so a
suite cut short still leaves a summary of what it measured.

    python benchmarks/gpu_suite_summary.py --out $OUT

Reads from --out: env.txt, refbench.jsonl (the reference harness's records), step.json,
data_path.json, embed.json, index.json (report.Table files); a missing file is a part not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Table  # noqa: E402

GIB_PER_GB = 1e9 / 2**30
# (target, reference arch in refbench, lvd arch, batch, minimum speed-up, memory rule)
STEP_TARGETS = [
    ("ViT-L/14 batch 64", "vit_large", "vit_l14", 64, 1.5, "no more peak memory than the reference"),
    ("ViT-S/14 batch 128", "vit_small", "vit_s14", 128, 2.0, None),
    ("ViT-g/14 batch 32", "vit_giant2", "vit_g14", 32, 1.3, "within 80 GB"),
]
PARTS = [("step.json", "lvd pretrain step"), ("data_path.json", "data path"), ("embed.json", "embed"),
         ("index.json", "index")]


def load_table(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def load_refbench(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and value == value else None


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def step_rows(step: dict | None, refs: list[dict]) -> list[list[str]]:
    rows = []
    lvd = {(r["arch"], r["batch"]): r for r in (step or {}).get("rows", []) if not r.get("error")}
    ok_refs = {(r.get("arch"), r.get("batch")): r for r in refs if r.get("status") == "ok"}
    for name, ref_arch, arch, batch, speedup, memory_rule in STEP_TARGETS:
        mine, ref = lvd.get((arch, batch)), ok_refs.get((ref_arch, batch))
        mine_ips = _num(mine["images_per_s"]) if mine else None
        mine_gb = _num(mine["peak_gib"]) / GIB_PER_GB if mine and _num(mine.get("peak_gib")) else None
        ref_ips = _num(ref.get("img_per_s")) if ref else None
        ref_gb = _num(ref.get("peak_alloc_GB")) if ref else None
        ratio = mine_ips / ref_ips if mine_ips and ref_ips else None
        ok = None if ratio is None else ratio >= speedup
        if ok is not None and memory_rule and mine_gb is not None:
            ok = ok and (mine_gb <= ref_gb if memory_rule.startswith("no more") and ref_gb else mine_gb <= 80.0)
        target = f">= {speedup}x the reference's images/s" + (f", {memory_rule}" if memory_rule else "")
        measured = (f"lvd {_fmt(mine_ips)} img/s, {_fmt(mine_gb)} GB; reference {_fmt(ref_ips)} img/s, "
                    f"{_fmt(ref_gb)} GB; ratio {_fmt(ratio, 2)}x")
        rows.append([f"step {name}", target, measured, verdict(ok)])
    return rows


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def data_path_rows(table: dict | None) -> list[list[str]]:
    rows = []
    for mode in ("photometric on device", "all on device"):
        row = next((r for r in (table or {}).get("rows", []) if r["mode"] == mode), None)
        ms = _num(row.get("cpu_ms_per_image")) if row else None
        measured = "-" if ms is None else (f"{ms:.2f} CPU ms/image ({_fmt(_num(row['worker_cpu_ms_per_image']), 2)} "
                                           f"in workers), {_fmt(_num(row['images_per_s']))} img/s on {row['device']}")
        on_gpu = row is not None and str(row.get("device", "")).startswith("cuda")  # on a CPU "device" it is no GPU augmentation
        rows.append([f"data path, {mode}", "<= 5 ms of CPU time per training image", measured,
                     verdict(None if ms is None or not on_gpu else ms <= 5.0)])
    return rows


def embed_rows(table: dict | None) -> list[list[str]]:
    row = next((r for r in (table or {}).get("rows", []) if r["arch"] == "vit_l14" and not r.get("error")), None)
    if row is None:
        return [["embed ViT-L/14 at 224", ">= 2,500 img/s end to end, data path < 10%", "-", verdict(None)]]
    e2e = _num(row["embed_end_to_end_images_per_s"])
    steady, bare = _num(row.get("embed_steady_images_per_s")), _num(row["bare_forward_images_per_s"])
    cost = 1 - (steady or e2e) / bare if bare else None
    measured = (f"end to end {_fmt(e2e)} img/s, steady {_fmt(steady)} img/s, bare forward {_fmt(bare)} img/s, "
                f"data path {_fmt(None if cost is None else 100 * cost, 0)}% ({row['device']})")
    ok = None if e2e is None or cost is None else (e2e >= 2500 and cost < 0.10)
    return [["embed ViT-L/14 at 224", ">= 2,500 img/s end to end, data path < 10%", measured, verdict(ok)]]


def index_rows(table: dict | None) -> list[list[str]]:
    rows = []
    found = [r for r in (table or {}).get("rows", []) if not r.get("error") and r.get("per_s")]
    for op in dict.fromkeys(r["op"] for r in found if r["engine"] == "faiss-cpu"):
        faiss = next(r for r in found if r["op"] == op and r["engine"] == "faiss-cpu")
        for r in found:
            if r["op"] == op and r["engine"].startswith("torch-cuda"):
                ratio = r["per_s"] / faiss["per_s"]
                rows.append([f"index {op}, {r['N']:,} x {r['D']}, {r['engine']}", "10x faiss-cpu (docs/benchmarks.md)",
                             f"{ratio:.1f}x ({r['seconds']:.2f} s vs {faiss['seconds']:.2f} s)", verdict(ratio >= 10)])
    if not rows:
        rows.append(["index on CUDA vs faiss-cpu", "10x faiss-cpu (docs/benchmarks.md)", "-", verdict(None)])
    return rows


def refbench_markdown(refs: list[dict]) -> str:
    lines = ["## reference step (refbench, official DINOv2)", "",
             "| arch | batch | status | img/s | step ms | peak alloc GB | GFLOP/img eff. | MFU eff. | error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in refs:
        ok = r.get("status") == "ok"
        lines.append(f"| {r.get('arch')} | {r.get('batch')} | {r.get('status')} | "
                     f"{_fmt(_num(r.get('img_per_s'))) if ok else '-'} | {_fmt(_num(r.get('step_ms_mean'))) if ok else '-'} | "
                     f"{_fmt(_num(r.get('peak_alloc_GB')), 2) if ok else '-'} | "
                     f"{_fmt(_num(r.get('gflop_per_img_effective')), 0) if ok else '-'} | "
                     f"{_fmt(100 * r['mfu_effective']) + '%' if ok and _num(r.get('mfu_effective')) else '-'} | "
                     f"{(r.get('error_type', '') + ' ' + str(r.get('error', ''))).strip()[:120] if not ok else ''} |")
    return "\n".join(lines) + "\n"


def table_markdown(table: dict) -> str:
    t = Table(table["title"], table["columns"], None, None, table.get("meta"))
    t.rows = table["rows"]
    return t.markdown()


def summary(out: Path) -> str:
    env = (out / "env.txt").read_text().strip() if (out / "env.txt").exists() else "(no env.txt)"
    refs = load_refbench(out / "refbench.jsonl")
    tables = {name: load_table(out / name) for name, _ in PARTS}
    targets = (step_rows(tables["step.json"], refs) + data_path_rows(tables["data_path.json"])
               + embed_rows(tables["embed.json"]) + index_rows(tables["index.json"]))
    lines = ["# GPU suite summary (issue 13)", "", "```", env, "```", "", "## Targets", "",
             "| target | wanted | measured | verdict |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in targets]
    lines += ["", "Peak memory: lvd's torch.cuda.max_memory_allocated in GB (1e9 B), as the reference reports it.", ""]
    lines.append(refbench_markdown(refs) if refs else "## reference step (refbench, official DINOv2)\n\nnot run\n")
    for name, title in PARTS:
        lines.append(table_markdown(tables[name]) if tables[name] else f"## {title}\n\nnot run ({name} missing)\n")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the suite's output folder ($OUT)")
    args = ap.parse_args()
    out = Path(args.out)
    text = summary(out)
    tmp = out / "summary.md.tmp"
    tmp.write_text(text)
    tmp.replace(out / "summary.md")


if __name__ == "__main__":
    main()
