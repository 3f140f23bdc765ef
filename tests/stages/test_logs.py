"""Logs that work everywhere (issue 14, item 5): without a terminal, plain flushed lines with the
bar's numbers (a line per shard in crawl-ingest and embed, a line per train.log_every in
pretrain); on an 80-column terminal the bar keeps n/total and ETA; TensorBoard event files
equal to metrics.jsonl, also across a resume.

The stages run as the real `lvd` command with stderr to a pipe (what SLURM, nohup and CI see).
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lvd_runner import lvd
from lvdtool.console import LineProgress, LiveProgress, progress
from lvdtool.errors import ConfigError, DependencyError
from lvdtool.train import tensorboard_log
from lvdtool.train.metrics import read_metrics

LOUD = {"LVD_QUIET": "0", "OMP_NUM_THREADS": "1"}
N_IMAGES, SHARD = 16, 4
TINY = ["--arch", "vit_test", "--iterations", "8", "--batch-size", "4", "--workers", "0", "model.patch_size=8",
        "model.img_size=32", "crops.global_crops_size=32", "crops.local_crops_size=16", "train.log_every=2",
        "checkpoint.every=3"]
# the collapse guard as a deterministic interruption: tolerance 0.99 of ln K always counts as collapsed,
# so the run stops with a TrainingError at iteration 5, after the checkpoint of iteration 3; these
# keys are resume-ignored, so the rerun without them resumes the same run
STOP_AT_5 = ["train.stop_on_collapse=true", "train.collapse_window=6", "train.collapse_tolerance=0.99"]
PRETRAIN_LINE = re.compile(
    r"^pretrain: (\d+)/(\d+) \(([\d.]+)%\), (?:[\d,.]+|-) it/s, elapsed \d:\d\d:\d\d, ETA (?:\d:\d\d:\d\d|-:--:--)"
    r" \| loss ([\d.]+) \(dino ([\d.]+) ibot ([\d.]+) koleo ([\d.]+)\) lr (\S+) .* \| ([\d.]+) img/s$")


def shard_lines(stderr: str, stage: str) -> list[tuple[int, int, int, int]]:
    """(shards done, shards, items done, items) of each plain progress line of `stage`."""
    pattern = re.compile(rf"^{stage} rank 0/1: (\d+)/(\d+) shards, ([\d,]+)/([\d,]+) \([\d.]+%\), "
                         r"(?:[\d,.]+|-) it/s, elapsed \d:\d\d:\d\d, ETA (?:\d:\d\d:\d\d|-:--:--)$")
    lines = [pattern.match(line) for line in stderr.splitlines() if line.startswith(f"{stage} rank")]
    assert all(lines), f"a {stage} progress line does not have the plain form:\n{stderr}"
    return [tuple(int(g.replace(",", "")) for g in m.groups()) for m in lines]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, str]:
    """16 real images crawl-ingested into 4 shards; returns the artifact and crawl-ingest's stderr."""
    root = tmp_path_factory.mktemp("logs")
    rng = np.random.default_rng(0)
    (root / "src").mkdir()
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "src" / f"img{i:02d}.png")
    proc = lvd("crawl-ingest", "--dir", str(root / "src"), "--out", str(root / "images"), "--shard-size", str(SHARD),
               "process.min_side=16", "dedup.perceptual=false", env=LOUD)
    return root / "images", proc.stderr


def test_crawl_ingest_prints_a_line_per_shard_with_its_total(images):
    _, stderr = images
    lines = shard_lines(stderr, "crawl-ingest")
    assert lines == [(k, 4, k * SHARD, N_IMAGES) for k in range(1, 5)]


def test_embed_prints_a_line_per_shard(images, tmp_path):
    proc = lvd("embed", "--images", str(images[0]), "--arch", "vit_test", "--out", str(tmp_path / "emb"),
               "--batch-size", "3", "random_init=true", "resolution=28", env=LOUD)
    lines = shard_lines(proc.stderr, "embed")
    assert [line[:2] for line in lines] == [(k, 4) for k in range(1, 5)]  # one line per shard, in order
    items = [line[2] for line in lines]
    assert items == sorted(items) and all(n >= k * SHARD for k, n in enumerate(items, 1))
    assert lines[-1][2:] == (N_IMAGES, N_IMAGES)


# ---- pretrain: plain lines and TensorBoard, across an interruption and its resume -----------------

@pytest.fixture(scope="module")
def run(images, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("run") / "run"
    args = ["pretrain", "--images", str(images[0]), "--out", str(out), *TINY]
    first = lvd(*args, *STOP_AT_5, env=LOUD, check=False)
    assert first.returncode == 1 and "collapse at iteration 5" in first.stderr, first.stderr
    first_metrics = read_metrics(out / "metrics.jsonl")
    second = lvd(*args, env=LOUD)
    return {"out": out, "first": first.stderr, "first_metrics": first_metrics, "second": second.stderr}


def check_lines_match_metrics(stderr: str, records: list[dict]) -> None:
    lines = [PRETRAIN_LINE.match(line) for line in stderr.splitlines() if re.match(r"pretrain: \d+/", line)]
    assert lines and all(lines), f"a pretrain progress line does not have the plain form:\n{stderr}"
    assert len(lines) == len(records)
    for m, r in zip(lines, records):
        done, total, percent, loss, dino, ibot, koleo, lr, rate = m.groups()
        assert (int(done), int(total)) == (r["iteration"] + 1, 8)
        assert float(percent) == round(100 * (r["iteration"] + 1) / 8, 1)
        assert (loss, dino, ibot, koleo) == tuple(f"{r[k]:.3f}" for k in ("loss", "dino", "ibot", "koleo"))
        assert lr == f"{r['lr']:.2e}" and rate == f"{r['images_per_s']:.1f}"


def test_pretrain_without_a_terminal_prints_a_line_per_log_every(run):
    # the interrupted run logged iterations 0, 2, 4 (log_every 2) and stopped at 5
    assert [r["iteration"] for r in run["first_metrics"]] == [0, 2, 4]
    check_lines_match_metrics(run["first"], run["first_metrics"])
    # the resumed run (from the checkpoint of iteration 3) logs 4, 6 and the last one, 7
    records = read_metrics(run["out"] / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [0, 2, 4, 6, 7]
    check_lines_match_metrics(run["second"], [r for r in records if r["iteration"] >= 3])


def test_tensorboard_scalars_equal_metrics_jsonl_after_a_resume(run):
    events = EventAccumulator(str(run["out"] / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    records = read_metrics(run["out"] / "metrics.jsonl")
    numeric = sorted(k for k, v in records[0].items() if k != "iteration" and isinstance(v, (int, float)))
    assert "loss" in numeric and "lr" in numeric and "images_per_s" in numeric
    assert sorted(events.Tags()["scalars"]) == numeric
    for tag in numeric:
        # iteration 4, logged before the interruption and again after the resume, is there once (purge_step)
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(r["iteration"], float(np.float32(r[tag]))) for r in records], tag


def test_tensorboard_modes(tmp_path, monkeypatch):
    assert tensorboard_log.open_tensorboard("off", tmp_path, True, 0) is None
    assert tensorboard_log.open_tensorboard("on", tmp_path, False, 0) is None  # not rank 0
    with pytest.raises(ConfigError, match=r"^train.tensorboard='yes': expected one of auto, on, off$"):
        tensorboard_log.open_tensorboard("yes", tmp_path, True, 0)
    monkeypatch.setattr(tensorboard_log, "tensorboard_installed", lambda: False)  # as without the package
    assert tensorboard_log.open_tensorboard("auto", tmp_path, True, 0) is None
    with pytest.raises(DependencyError, match=r"^train.tensorboard=on: the tensorboard package is not installed") as e:
        tensorboard_log.open_tensorboard("on", tmp_path, True, 0)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "tensorboard").exists()


# ---- the display itself -----------------------------------------------------------------------

def test_an_80_column_terminal_keeps_the_count_and_the_eta(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("LVD_QUIET", raising=False)
    buf = io.StringIO()
    out = Console(file=buf, force_terminal=True, color_system=None)
    assert out.width == 80 and isinstance(progress(out), LiveProgress)
    now = [0.0]
    bar = LiveProgress(out, get_time=lambda: now[0])
    ingest = bar.add_task("crawl-ingest rank 0/1", total=1797)
    train = bar.add_task("pretrain", total=125_000, completed=3)
    bar.update(train, detail="loss 8.627 (dino 2.699 ibot 3.455 koleo 24.728) lr 2.50e-04 m 0.9920 T 0.070 | "
                             "teacher H 2.50/5.55 info 0.00 cos 1.000 spread 0.00 | 7.9 img/s")
    for _ in range(2):  # two samples a second apart: 250 and 1 it/s
        now[0] += 1
        bar.advance(ingest, 250)
        bar.advance(train, 1)
    out.print(bar.get_renderable())
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    assert all(len(line) <= 80 for line in lines), lines
    # the bar made room; n/total, %, it/s, elapsed and ETA stayed
    assert re.fullmatch(r"crawl-ingest rank 0/1 +500/1,797 +28% +250.0 it/s 0:00:02 ETA 0:00:06", lines[0]), lines
    assert re.fullmatch(r"pretrain +5/125,000 +0% +1.0 it/s 0:00:02 ETA 34:43:15", lines[1]), lines
    assert lines[2].startswith("  loss 8.627 (dino 2.699")  # the metrics under the row, wrapped, not cut
    assert "| 7.9 img/s" in " ".join(buf.getvalue().split())
    wide = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=120)
    bar = LiveProgress(wide)
    bar.add_task("crawl-ingest rank 0/1", total=1797, completed=500)
    wide.print(bar.get_renderable())
    assert "━" in wide.file.getvalue() and "500/1,797" in wide.file.getvalue()  # the bar where it fits


def test_plain_lines_per_shard_and_at_most_every_interval_in_a_long_shard():
    now = [0.0]
    buf = io.StringIO()
    bar = LineProgress(Console(file=buf, width=80), every_s=30, get_time=lambda: now[0])
    with bar:
        task = bar.add_task("embed rank 0/1", total=300, shards=2)
        for _ in range(100):  # a long first shard: 100 s, a line every 30 s
            now[0] += 1
            bar.advance(task)
        bar.update(task, shards_done=1)
        for _ in range(10):
            now[0] += 1
            bar.advance(task, 20)
        bar.update(task, shards_done=2)
    lines = buf.getvalue().splitlines()
    assert [line.split(": ")[1].split(" (")[0] for line in lines] == [
        "0/2 shards, 30/300", "0/2 shards, 60/300", "0/2 shards, 90/300", "1/2 shards, 100/300", "2/2 shards, 300/300"]
    # rich's windowed rate (the bar's), elapsed since the task began, nothing left
    assert re.fullmatch(r"embed rank 0/1: 2/2 shards, 300/300 \(100.0%\), \d+\.\d it/s, elapsed 0:01:50, ETA 0:00:00",
                        lines[-1]), lines[-1]
