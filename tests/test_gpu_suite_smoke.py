"""benchmarks/gpu_suite.sh: the --cpu-smoke run writes every table the GPU run will write; the
summary's ratios against issue 13's targets; the header's budget fits one 9-minute command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "gpu_suite.sh"
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_suite_summary import summary  # noqa: E402
from report import Table  # noqa: E402

TABLES = ("step.json", "data_path.json", "embed.json", "index.json")


def _suite(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SUITE), *args], env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow  # about 60 s on the loaded 2-core machine: seven Python start-ups
def test_cpu_smoke_writes_every_table(tmp_path):
    proc = _suite(tmp_path, "--cpu-smoke")
    out = tmp_path / "out"
    assert proc.returncode == 0, proc.stdout[-2000:] + (out / "log.txt").read_text()[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["env.txt", "log.txt", "summary.md", "refbench.jsonl", *TABLES])  # <= 8: the device returns 8

    step = json.loads((out / "step.json").read_text())
    assert [(r["arch"], r["batch"]) for r in step["rows"]] == [("vit_test", 4), ("vit_test", 2), ("vit_test", 8)]
    for r in step["rows"]:
        assert r["error"] == "" and r["images_per_s"] > 0 and r["peak_gib"] > 0
        assert 0 < r["effective_gflop_per_image"] < r["gflop_per_image"]  # drop path 0.4: the subset is counted

    data = json.loads((out / "data_path.json").read_text())
    assert [r["mode"] for r in data["rows"]] == ["cpu", "photometric on device", "all on device"]
    assert data["meta"]["cpu_backend"] == "numba"  # --backend auto, numba installed (the dev extra)
    for r in data["rows"]:
        assert r["images"] >= 16 and r["cpu_ms_per_image"] > 0 and r["worker_cpu_ms_per_image"] > 0
        # The same crops wherever the augmentation runs: the cpu placement renders with the numba
        # backend, the device placements partly or wholly with torch ops, equal to float32 rounding.
        assert r["max_abs_diff_vs_cpu"] <= (0.0 if r["mode"] == "cpu" else 2e-5), r

    embed = json.loads((out / "embed.json").read_text())
    (row,) = embed["rows"]
    assert row["arch"] == "vit_test" and row["error"] == "" and row["images"] == 48
    assert row["bare_forward_images_per_s"] > 0 and row["embed_end_to_end_images_per_s"] > 0

    index = json.loads((out / "index.json").read_text())
    engines = {(r["op"].split(" (")[0], r["engine"]) for r in index["rows"] if r["error"] == "" and r["per_s"] > 0}
    for engine in ("faiss-cpu", "torch-cpu-fp32"):
        assert {("k-means", engine), ("exact 10-NN", engine), ("dedup graph", engine)} <= engines
    assert {r["N"] for r in index["rows"]} == {10_000}

    refs = [json.loads(line) for line in (out / "refbench.jsonl").read_text().splitlines()]
    assert [(r["arch"], r["batch"], r["status"]) for r in refs] == [
        ("vit_large", 64, "skipped"), ("vit_giant2", 32, "skipped"), ("vit_small", 128, "skipped")]

    text = (out / "summary.md").read_text()
    for title in ("## Targets", "## reference step", "## lvd pretrain step", "## data path with the augmentation",
                  "## lvd embed vs bare forward", "## index: k-means"):
        assert title in text
    assert "| step ViT-L/14 batch 64 |" in text and "not measured" in text
    env_txt = (out / "env.txt").read_text()
    for part in "bcde":
        assert re.search(rf"^part {part}: ok \(rc 0\)", env_txt, re.M), env_txt


def test_unknown_argument_is_one_line_and_exit_2(tmp_path):
    proc = _suite(tmp_path, "--gpu")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu_suite.sh: unknown argument --gpu (expected --cpu-smoke, --only a,b,c,d,e)"


def test_full_run_refused_without_a_gpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "NVIDIA_SMI": str(tmp_path / "no-nvidia-smi")}
    proc = subprocess.run(["bash", str(SUITE)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and not (tmp_path / "out").exists()  # nothing installed, nothing written
    assert proc.stderr.strip() == (f"gpu_suite.sh: no GPU here ({tmp_path / 'no-nvidia-smi'} not found): "
                                   "run it on the GPU machine, or use --cpu-smoke")


def _step_table(out: Path, rows: list[tuple[str, int, float, float]]) -> None:
    cols = ["arch", "batch", "images_per_s", "peak_gib", "error"]
    table = Table("lvd pretrain step", cols, str(out / "step.json"), None)
    for arch, batch, ips, gib in rows:
        table.add(arch=arch, batch=batch, images_per_s=ips, peak_gib=gib, error="")


def test_summary_ratios_against_the_targets(tmp_path):
    refs = [{"arch": "vit_large", "batch": 64, "status": "ok", "img_per_s": 160.0, "peak_alloc_GB": 57.4},
            {"arch": "vit_small", "batch": 128, "status": "ok", "img_per_s": 500.0, "peak_alloc_GB": 36.9},
            {"arch": "vit_giant2", "batch": 32, "status": "error", "error_type": "OutOfMemoryError", "error": "CUDA"}]
    (tmp_path / "refbench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    # L: 1.6x but more memory than the reference (60 GiB = 64.4 GB > 57.4): not met; S: 2.1x: met;
    # g: no reference record: not measured.
    _step_table(tmp_path, [("vit_l14", 64, 256.0, 60.0), ("vit_s14", 128, 1050.0, 30.0), ("vit_g14", 32, 70.0, 70.0)])
    cols = ["mode", "images_per_s", "worker_cpu_ms_per_image", "cpu_ms_per_image", "device"]
    data = Table("data path", cols, str(tmp_path / "data_path.json"), None)
    data.add(mode="photometric on device", images_per_s=2000.0, worker_cpu_ms_per_image=3.5, cpu_ms_per_image=4.2,
             device="cuda")
    data.add(mode="all on device", images_per_s=1000.0, worker_cpu_ms_per_image=2.0, cpu_ms_per_image=5.5, device="cuda")
    cols = ["arch", "bare_forward_images_per_s", "embed_end_to_end_images_per_s", "embed_steady_images_per_s",
            "device", "error"]
    embed = Table("embed", cols, str(tmp_path / "embed.json"), None)
    embed.add(arch="vit_l14", bare_forward_images_per_s=3000.0, embed_end_to_end_images_per_s=2600.0,
              embed_steady_images_per_s=2800.0, device="cuda", error="")
    cols = ["op", "N", "D", "engine", "seconds", "per_s", "error"]
    index = Table("index", cols, str(tmp_path / "index.json"), None)
    index.add(op="k-means", N=1_000_000, D=384, engine="faiss-cpu", seconds=10.0, per_s=1e6, error="")
    index.add(op="k-means", N=1_000_000, D=384, engine="torch-cuda-bf16", seconds=0.5, per_s=2e7, error="")

    lines = {line.split(" | ")[0].lstrip("| "): line for line in summary(tmp_path).splitlines() if line.startswith("| ")}
    assert "ratio 1.60x" in lines["step ViT-L/14 batch 64"] and lines["step ViT-L/14 batch 64"].endswith("**not met** |")
    assert "ratio 2.10x" in lines["step ViT-S/14 batch 128"] and lines["step ViT-S/14 batch 128"].endswith("**met** |")
    assert lines["step ViT-g/14 batch 32"].endswith("not measured |")
    assert lines["data path, photometric on device"].endswith("**met** |")
    assert lines["data path, all on device"].endswith("**not met** |")
    assert "data path 7%" in lines["embed ViT-L/14 at 224"] and lines["embed ViT-L/14 at 224"].endswith("**met** |")
    assert "20.0x" in lines["index k-means, 1,000,000 x 384, torch-cuda-bf16"]
    assert "OutOfMemoryError CUDA" in lines["vit_giant2"]


def test_budget_table_fits_one_nine_minute_command():
    text = SUITE.read_text()
    header = dict(re.findall(r"^# \| (\w+)\s+\|.*\|\s+(\d+) \|$", text, re.M))
    assert set(header) == {"0", "a", "b", "c", "d", "e"}
    full = re.search(r"^  B_START=(\d+) B_REF=(\d+) B_STEP=(\d+) B_DATA=(\d+) B_EMBED=(\d+) B_INDEX=(\d+)$",
                     text.split("else\n  DEV=cuda", 1)[1], re.M)
    assert [int(v) for v in full.groups()] == [int(header[p]) for p in "0abcde"]
    total = int(re.search(r"^# \|\s+\| total\s+\|\s+(\d+) \|$", text, re.M).group(1))
    assert total == sum(int(v) for v in header.values()) + 5 and total <= 540
