"""README's demo numbers and the demo's own summary code agree on format, and the check names differences.

The 15-minute demo itself is not run here: its summary (stages/demo_summary.py) runs on a tiny work folder of
real artifacts (crawl-ingested digits and demo-style photos with the demo's planted copies, embedded with the
demo's thumbnail descriptor and deduplicated at the demo's threshold) and fake probe reports.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from lvd_runner import lvd

ROOT = Path(__file__).resolve().parents[2]
STAGES = ROOT / "stages"
sys.path.insert(0, str(STAGES))
import demo_readme  # noqa: E402
import demo_summary  # noqa: E402
from demo_data import jpeg, synthetic_scene  # noqa: E402

PROBE_TOP1 = {"pretrained": 81.25, "random_mini8": 40.0, "hires_32": 77.5, "mini8": 70.0, "micro8": 65.0,
              "random_micro8": 35.0, "pretrained_64": 82.5, "hires_64": 85.0}


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_readme_block_reads_as_the_demo_prints_it() -> None:
    lines = demo_readme.block_lines((ROOT / "README.md").read_text())
    shown = demo_readme.parse_lines(lines)
    assert set(shown) == {name for name, _ in demo_summary.fields()}
    numbers = {name: (int(shown[name]) if spec.endswith("d") else float(shown[name])) for name, spec in demo_summary.fields()}
    assert demo_summary.render(numbers) == lines  # README's lines are exactly the demo's lines at those numbers


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A demo work folder in miniature: real images artifacts, a real dedup, fake probe reports."""
    from skimage import data as skdata
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("demo")
    w = root / "w"
    digits = load_digits()
    for split, rows in {"train": range(0, 40), "val": range(40, 60)}.items():
        for i in rows:
            folder = root / "labeled" / split / f"digit{digits.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32)).convert("RGB").save(folder / f"{i:05d}.png")
        lvd("crawl-ingest", "--dir", str(root / "labeled" / split), "--label-from-dir", "--out", str(w / f"digits_{split}"),
            "process.min_side=16")
    # the demo's photos and planted copies (stages/demo_data.py's edits), and distinct synthetic scenes
    web = root / "web"
    web.mkdir()
    rng = np.random.default_rng(0)
    for name in ("astronaut", "coffee", "rocket"):
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        (web / f"{name}.jpg").write_bytes(jpeg(img))
        (web / f"{name}_dup_small.jpg").write_bytes(jpeg(img.resize((img.width * 3 // 4, img.height * 3 // 4)), 75))
        crop = img.crop((img.width // 50, img.height // 50, img.width, img.height))
        (web / f"{name}_dup_crop.jpg").write_bytes(jpeg(ImageEnhance.Brightness(crop).enhance(1.05), 85))
    for i in range(8):
        (web / f"scene{i:03d}.jpg").write_bytes(jpeg(synthetic_scene(rng)))
    lvd("crawl-ingest", "--dir", str(web), "--out", str(w / "raw"))
    descriptor = w / "thumb8.torchscript.pt"
    assert _python(str(STAGES / "demo_descriptor.py"), str(descriptor)).returncode == 0
    lvd("embed", "--images", str(w / "raw"), "--out", str(w / "copy_emb"), "model.kind=torchscript",
        f"model.path={descriptor}", "preprocess=sscd", "workers=0")
    lvd("dedup", "--embeddings", str(w / "copy_emb"), "--out", str(w / "dedup"), "--threshold", "0.93", "--k", "16",
        "calibration.pairs=0")
    # stands in for the random ViT's dedup: the same descriptor at a threshold far too low
    lvd("dedup", "--embeddings", str(w / "copy_emb"), "--out", str(w / "dedup_random_vit"), "--threshold", "0.3",
        "--k", "16", "calibration.pairs=0")
    for name, folder in demo_summary.PROBES.items():
        (w / folder).mkdir()
        (w / folder / "report.json").write_text(json.dumps({"knn": {"20": {"top1": PROBE_TOP1[name], "top5": 99.0}}}))
    return w


def test_the_demo_summary_counts_dedup_against_the_planted_copies(work: Path) -> None:
    proc = _python(str(STAGES / "demo_summary.py"), str(work))
    assert proc.returncode == 0, proc.stderr
    numbers = json.loads((work / "numbers.json").read_text())
    assert proc.stdout.splitlines() == demo_summary.render(numbers)
    assert {k: numbers[k] for k in PROBE_TOP1} == {k: round(v, 1) for k, v in PROBE_TOP1.items()}
    assert numbers["val_images"] == 20 and 10 < numbers["raw_pixels"] <= 100
    # the demo's descriptor and threshold: every planted copy removed, no distinct scene or photo
    assert numbers["dedup_threshold"] == 0.93 and numbers["dedup_images"] == 3 * 3 + 8
    assert numbers["dedup_planted"] == 6 and numbers["dedup_removed_copies"] == 6
    assert numbers["dedup_removed_distinct"] == 0 and numbers["dedup_removed"] == 6
    # a threshold far too low throws distinct images away, and the count says so
    assert numbers["vit_threshold"] == 0.3 and numbers["vit_removed_distinct"] > 0
    assert numbers["vit_removed"] == numbers["vit_removed_copies"] + numbers["vit_removed_distinct"]


def test_the_readme_check_names_each_difference(work: Path, tmp_path: Path) -> None:
    if not (work / "numbers.json").exists():
        assert _python(str(STAGES / "demo_summary.py"), str(work)).returncode == 0
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    script = str(STAGES / "demo_readme.py")
    wrote = _python(script, "--write", str(work), "--readme", str(readme))
    assert wrote.returncode == 0, wrote.stdout
    text = readme.read_text()
    assert "pretrained 81.2%" in text or "pretrained 81.3%" in text
    outside = (ROOT / "README.md").read_text().split(demo_readme.BEGIN)
    assert text.startswith(outside[0]) and text.endswith(outside[1].split(demo_readme.END)[1])  # only the block changes
    ok = _python(script, "--check", str(work), "--readme", str(readme))
    assert ok.returncode == 0 and "match" in ok.stdout
    numbers = json.loads((work / "numbers.json").read_text())
    changed = {**numbers, "micro8": 12.3, "dedup_removed_distinct": 4}
    (work / "numbers.json").write_text(json.dumps(changed))
    try:
        bad = _python(script, "--check", str(work), "--readme", str(readme))
    finally:
        (work / "numbers.json").write_text(json.dumps(numbers))
    assert bad.returncode == 1 and len(bad.stdout.strip().splitlines()) == 1
    assert bad.stdout.startswith("warning: ") and "micro8: README 65.0, demo 12.3" in bad.stdout
    assert "dedup_removed_distinct: README 0, demo 4" in bad.stdout and "pretrained:" not in bad.stdout
    readme.write_text(text.replace("raw pixels", "pixels"))
    garbled = _python(script, "--check", str(work), "--readme", str(readme))
    assert garbled.returncode == 1 and "line 1 is not the demo's line 1" in garbled.stdout
