"""`hires-adapt` end to end on real images (scikit-learn digits ingested by `lvd crawl-ingest`): the new
run starts from the source run's teacher (equal outputs before any step, with and without resizing the
stored position-embedding grid), trains at the new size, resumes bitwise after SIGKILL, draws one
resolution per iteration identically on 2 gloo ranks, and fails with one-line errors.

The stage runs as `python -m lvdtool.stages.hires_adapt` / `torchrun -m lvdtool.stages.hires_adapt`
(the same `main` the `lvd hires-adapt` command calls) or in-process through `main` / `compose`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from sklearn.datasets import load_digits

from kill_run import run_until_then_kill
from lvd_runner import lvd
from lvdtool.artifacts import read_manifest
from lvdtool.cli import STAGE_CONFIGS
from lvdtool.config import default_config_yaml
from lvdtool.data.resolution import ResolutionChoice
from lvdtool.errors import ArtifactError, ConfigError
from lvdtool.models import load_backbone
from lvdtool.models.pos_embed import interpolate_pos_embed
from lvdtool.stages import hires_adapt
from lvdtool.train.build import build_training_data, ingest_size_warning
from lvdtool.train.config import PretrainConfig
from lvdtool.train.networks import pretrain_networks
from lvdtool.train.source_run import open_source

BIN = Path(sys.executable).parent
LOSS_KEYS = ("loss", "dino", "ibot", "koleo", "grad_norm")
N_DIGITS = 400  # enough for a few batches of 8; the ingest stays around a second
SOURCE = ["recipe=vit_test", "model.patch_size=8", "crops.global_crops_size=32", "crops.local_crops_size=16",
          "train.log_every=1", "data.workers=0", "train.batch_size_per_gpu=8", "train.iterations=6",
          "checkpoint.every=3", "teacher.temp=0.06"]
HIRES = ["train.batch_size_per_gpu=8", "data.workers=0", "train.log_every=1"]


# ---- data: digits at 32 px (an images artifact) ------------------------------------------------------

def ingest_digits(root: Path, n: int, *extra: str) -> Path:
    data = load_digits()
    for i, (pixels, label) in enumerate(zip(data.images[:n], data.target[:n])):
        image = Image.fromarray((pixels / 16 * 255).astype(np.uint8), "L").resize((32, 32), Image.Resampling.BICUBIC)
        (root / "src" / str(label)).mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(root / "src" / str(label) / f"d{i:04d}.png")
    images = root / "images"
    # digits are near-duplicates of each other by nature: keep them all
    lvd("crawl-ingest", "--dir", str(root / "src"), "--label-from-dir", "--out", str(images), "--shard-size", "500",
        "process.min_side=16", "dedup.perceptual=false", "dedup.exact=false", *extra)
    return images


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return ingest_digits(tmp_path_factory.mktemp("digits"), N_DIGITS)


def env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "LVD_QUIET": "1", "OMP_NUM_THREADS": str(threads)}


def command(stage: str, args: list[str], nproc: int = 1) -> list[str]:
    launcher = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return [*launcher, "-m", f"lvdtool.stages.{stage}", *args]


def check(proc: subprocess.CompletedProcess | subprocess.Popen, stdout: str, stderr: str, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}"


def run_stage(stage: str, args: list[str], nproc: int = 1, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(stage, args, nproc), capture_output=True, text=True, env=env(), timeout=timeout)
    check(proc, proc.stdout, proc.stderr, stage)
    return proc


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(records: list[dict]) -> list[tuple]:
    return [(r["iteration"], *(r[k] for k in LOSS_KEYS)) for r in records]


# ---- the source runs: tiny pretrain runs with a 4x4 and an 8x8 stored grid (built side by side) -------

@pytest.fixture(scope="module")
def sources(digits, tmp_path_factory) -> dict[str, Path]:
    """grid4: img_size 32 (the stored grid is 4x4); grid8: img_size 64 (8x8), both trained at 32 px."""
    root = tmp_path_factory.mktemp("sources")
    runs = {"grid4": root / "grid4", "grid8": root / "grid8"}
    procs = {name: subprocess.Popen(command("pretrain", [*SOURCE, f"model.img_size={4 * 8 if name == 'grid4' else 8 * 8}",
                                                         f"data.images={digits}", f"out={out}"]),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
             for name, out in runs.items()}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=180)
        check(proc, stdout, stderr, f"pretrain {name}")
        assert read_manifest(runs[name]).complete
    return runs


@pytest.fixture(scope="module")
def reference(digits, sources, tmp_path_factory) -> dict:
    """A hires-adapt run at 64 px from the 4x4-grid source, run to the end in one process."""
    out = tmp_path_factory.mktemp("hires") / "reference"
    args = [f"from_run={sources['grid4']}", f"data.images={digits}", "crops.global_crops_size=64",
            "train.iterations=12", "checkpoint.every=2", *HIRES]
    proc = run_stage("hires_adapt", [*args, f"out={out}"])
    return {"out": out, "args": args, "printed": " ".join((proc.stdout + proc.stderr).split())}


def networks_before_any_step(source: Path, digits: Path, tmp_path: Path, *extra: str):
    cfg, _ = hires_adapt.compose([f"from_run={source}", f"data.images={digits}", f"out={tmp_path / 'unused'}", *extra])
    return cfg, pretrain_networks(cfg, resuming=False, previous_inputs=[])


def outputs(backbone: torch.nn.Module, size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        out = backbone.eval()(x)
    return {k: v for k, v in out.items() if torch.is_tensor(v) and v.numel()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b) and {"x_norm_clstoken", "x_norm_patchtokens"} <= set(a)
    return max((a[k] - b[k]).abs().max().item() for k in a)


# ---- the start: the source teacher, exactly -----------------------------------------------------------

def test_start_equals_the_source_teacher_when_the_stored_grid_already_covers_the_new_size(digits, sources, tmp_path):
    source = sources["grid8"]
    cfg, built = networks_before_any_step(source, digits, tmp_path, "crops.global_crops_size=64")
    assert cfg.model.img_size == 64 and cfg.model.arch == "vit_test" and cfg.crops.local_crops_size == 16
    assert [ref.role for ref in built.inputs] == ["from"]
    (line,) = built.lines
    assert f"pretrain run {source} at iteration 6" in line and "backbone and heads" in line
    assert "resized" not in line  # the 8x8 grid is kept as stored
    meta = built.meta
    teacher = load_backbone(source / "backbone.pth")
    assert meta.student.backbone.pos_embed.shape == teacher.pos_embed.shape == (1, 1 + 64, 32)
    # at the source's training resolution (32 px: the 8x8 grid interpolated to 4x4 on both sides)
    expected = outputs(teacher, 32)
    assert max_difference(outputs(meta.student.backbone, 32), expected) <= 1e-6  # measured 0.0
    assert max_difference(outputs(meta.teacher.backbone, 32), expected) <= 1e-6
    # the heads (and the backbone) are the source teacher's, in student and teacher
    state = open_source(source).teacher_state()
    heads = [k for k in state if not k.startswith("backbone.")]
    assert heads and all(k.startswith("dino_head.") for k in heads)  # vit_test: iBOT shares the DINO head
    for network in (meta.student, meta.teacher):
        own = network.state_dict()
        assert set(own) == set(state)
        assert all(torch.equal(own[k], state[k]) for k in state)
    # and the source's exported backbone is its checkpoint's teacher backbone
    exported = torch.load(source / "backbone.pth", weights_only=True)
    assert all(torch.equal(exported[k], state[f"backbone.{k}"]) for k in exported)


def test_a_smaller_stored_grid_is_resized_once_with_the_runtime_rule(digits, sources, reference, tmp_path):
    source = sources["grid4"]
    cfg, built = networks_before_any_step(source, digits, tmp_path, "crops.global_crops_size=64")
    assert cfg.model.img_size == 64
    assert "position embedding resized once from a 4x4 to a 8x8 grid" in built.lines[0]
    teacher = load_backbone(source / "backbone.pth")
    assert teacher.pos_embed.shape == (1, 1 + 16, 32)
    student = built.meta.student.backbone
    assert student.pos_embed.shape == (1, 1 + 64, 32)
    # at 64 px the source interpolates its 4x4 grid at every forward; the new run stores the result
    expected = outputs(teacher, 64)
    difference = max_difference(outputs(student, 64), expected)
    assert difference <= 1e-5, difference  # measured 0.0: the same bicubic rule, both in float32
    assert max_difference(outputs(built.meta.teacher.backbone, 64), expected) <= 1e-5
    # ... and the rule matters: the other convention (explicit size, no offset) is visibly different
    config = teacher.config
    assert config.interpolate_offset > 0
    other = interpolate_pos_embed(teacher.pos_embed.detach(), 8, 8, 0.0, config.interpolate_antialias)
    with torch.no_grad():
        student.pos_embed.copy_(other)
    assert max_difference(outputs(student, 64), expected) > 100 * max(difference, 1e-5)
    # the exported backbone of a run at 64 px has the 8x8 grid (1 + 64 rows) and loads with it
    exported = torch.load(reference["out"] / "backbone.pth", weights_only=True)
    assert exported["pos_embed"].shape == (1, 1 + 64, 32)
    assert load_backbone(reference["out"] / "backbone.pth").config.img_size == 64
    assert read_manifest(reference["out"]).config["model"]["img_size"] == 64  # a resume rebuilds the same grid


# ---- training at the new size, restart --------------------------------------------------------------

def test_steps_run_at_the_new_size_and_the_manifest_records_the_source(sources, reference):
    out = reference["out"]
    assert "position embedding resized once from a 4x4 to a 8x8 grid" in reference["printed"]
    assert "global crops 64 px" in reference["printed"]
    records = metrics(out)
    assert [r["iteration"] for r in records] == list(range(12))
    assert all(r["global_size"] == 64 for r in records)
    assert all(np.isfinite([r[k] for k in LOSS_KEYS]).all() for r in records)
    manifest = read_manifest(out)
    assert manifest.stage == "hires-adapt" and manifest.kind == "checkpoint" and manifest.complete
    (source,) = [ref for ref in manifest.inputs if ref.role == "from"]
    assert Path(source.path) == sources["grid4"].resolve()
    assert source.fingerprint == read_manifest(sources["grid4"]).fingerprint
    assert manifest.config["crops"]["global_crops_size"] == 64
    assert manifest.config["crops"]["local_crops_size"] == 16  # carried from the source run
    assert manifest.config["dino"]["prototypes"] == read_manifest(sources["grid4"]).config["dino"]["prototypes"]
    # the teacher temperature the source ended at, held constant (not the preset's 0.07)
    assert manifest.config["teacher"]["temp"] == 0.06
    assert all(r["teacher_temp"] == 0.06 for r in records)


def test_killed_run_rerun_equals_the_uninterrupted_one(digits, reference, tmp_path):
    killed = tmp_path / "killed"
    first = killed / "checkpoints" / "ckpt-00000002"
    run_until_then_kill(command("hires_adapt", [*reference["args"], f"out={killed}"]), first, env())
    assert not read_manifest(killed).complete, "the run finished before the kill: nothing was interrupted"
    # an unfinished run is no place to start another phase from
    with pytest.raises(ArtifactError, match="not complete"):
        hires_adapt.compose([f"from_run={killed}", f"data.images={digits}", f"out={tmp_path / 'next'}"])

    rerun = run_stage("hires_adapt", [*reference["args"], f"out={killed}"])  # the same command again
    assert "resuming from ckpt-" in " ".join(rerun.stderr.split())
    assert read_manifest(killed).complete
    assert losses(metrics(killed)) == losses(metrics(reference["out"]))  # bitwise: floats compared exactly
    assert not list((killed / "checkpoints").glob("*.tmp"))
    final = torch.load(killed / "backbone.pth", weights_only=True)
    expected = torch.load(reference["out"] / "backbone.pth", weights_only=True)
    assert set(final) == set(expected) and all(torch.equal(final[k], expected[k]) for k in expected)
    assert [r.role for r in read_manifest(killed).inputs] == [r.role for r in read_manifest(reference["out"]).inputs]


# ---- mixed resolution --------------------------------------------------------------------------------

def test_resolution_choice_is_a_seeded_function_of_the_iteration():
    choice = ResolutionChoice([0.3, 0.7], seed=5)
    sequence = [choice.index(i) for i in range(2000)]
    assert sequence == [ResolutionChoice([0.3, 0.7], seed=5).index(i) for i in range(2000)]
    assert sequence != [ResolutionChoice([0.3, 0.7], seed=6).index(i) for i in range(2000)]
    assert sequence[1000:1010] == [choice.index(i) for i in range(1000, 1010)]  # no state: any order
    assert abs(np.mean(np.array(sequence) == 0) - 0.3) < 0.04  # binomial sd 0.010
    three = ResolutionChoice([1, 2, 1], seed=0)  # unnormalised weights
    counts = np.bincount([three.index(i) for i in range(2000)], minlength=3) / 2000
    assert np.allclose(counts, [0.25, 0.5, 0.25], atol=0.04), counts
    assert {ResolutionChoice([1.0], seed=0).index(i) for i in range(50)} == {0}
    with pytest.raises(ConfigError):
        ResolutionChoice([0.5, 0.0], seed=0)


def test_two_ranks_draw_the_same_resolution_per_iteration(digits, sources, tmp_path):
    out = tmp_path / "mixed"
    proc = run_stage("hires_adapt", [f"from_run={sources['grid4']}", f"data.images={digits}", f"out={out}",
                                     "crops.resolutions=[{global_size:32,local_size:16,p:0.5},"
                                     "{global_size:48,local_size:16,p:0.5}]",
                                     "train.iterations=8", "checkpoint.every=8", *HIRES], nproc=2)
    assert "position embedding resized once from a 4x4 to a 6x6 grid" in " ".join((proc.stdout + proc.stderr).split())
    manifest = read_manifest(out)
    assert manifest.complete and manifest.extra["plan"]["global_batch"] == 16
    assert manifest.config["model"]["img_size"] == 48  # the stored grid covers the largest crop
    records = metrics(out)
    assert [r["iteration"] for r in records] == list(range(8))
    sizes = [r["global_size"] for r in records]
    assert set(sizes) == {32, 48}
    choice = ResolutionChoice([0.5, 0.5], manifest.config["train"]["seed"])
    assert sizes == [(32, 48)[choice.index(i)] for i in range(8)]
    assert all(np.isfinite([r[k] for k in LOSS_KEYS]).all() for r in records)


# ---- errors ------------------------------------------------------------------------------------------

def test_errors_are_one_line(digits, sources, tmp_path):
    with pytest.raises(ConfigError, match="--from RUN") as info:
        hires_adapt.main([f"data.images={digits}", f"out={tmp_path / 'no_source'}"])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "no_source").exists()

    # a run directory that is not complete
    unfinished = tmp_path / "unfinished"
    shutil.copytree(sources["grid4"], unfinished)
    dataclasses.replace(read_manifest(unfinished), complete=False).write(unfinished)
    with pytest.raises(ArtifactError, match="not complete") as info:
        hires_adapt.main([f"from_run={unfinished}", f"data.images={digits}", f"out={tmp_path / 'a'}"])
    assert "\n" not in str(info.value)
    # an artifact that is not a training run; a path that is nothing
    with pytest.raises(ArtifactError, match="not a training run"):
        hires_adapt.main([f"from_run={digits}", f"data.images={digits}", f"out={tmp_path / 'b'}"])
    with pytest.raises(ConfigError, match="no such run directory"):
        hires_adapt.main([f"from_run={tmp_path / 'missing'}", f"data.images={digits}", f"out={tmp_path / 'c'}"])

    # the heads are loaded strictly: an overridden head size does not fit the source's teacher
    source = sources["grid4"]
    assert read_manifest(source).config["dino"]["prototypes"] == 256
    with pytest.raises(ConfigError, match="must not be overridden") as info:
        hires_adapt.main([f"from_run={source}", f"data.images={digits}", f"out={tmp_path / 'heads'}",
                          "dino.prototypes=128", "crops.global_crops_size=64", "train.iterations=1", *HIRES])
    message = str(info.value)
    assert str(source) in message and "\n" not in message
    assert not dist.is_initialized()  # the stage closed the process group it opened


def test_images_stored_smaller_than_the_crop_warn(sources, tmp_path):
    warning = ingest_size_warning({"process": {"resize_mode": "max_side", "size": 512}}, 518)
    assert warning and "512" in warning and "518" in warning and "\n" not in warning
    assert ingest_size_warning({"process": {"resize_mode": "max_side", "size": 1024}}, 518) is None
    assert ingest_size_warning({"process": {"resize_mode": "max_side", "size": 512, "keep_original": True}}, 518) is None
    assert ingest_size_warning({"process": {"resize_mode": "max_side", "size": 518}}, 518) is None
    # a real images artifact ingested at 48 px, trained at 64 px: the run's data carries the warning
    small = ingest_digits(tmp_path, 20, "process.size=48")
    cfg, _ = hires_adapt.compose([f"from_run={sources['grid4']}", f"data.images={small}", f"out={tmp_path / 'unused'}",
                                  "crops.global_crops_size=64"])
    data = build_training_data(cfg, cfg.model.patch_size)
    assert data.warning and "48 px" in data.warning and "64 px" in data.warning
    cfg, _ = hires_adapt.compose([f"from_run={sources['grid4']}", f"data.images={small}", f"out={tmp_path / 'unused'}",
                                  "crops.global_crops_size=48"])
    assert build_training_data(cfg, cfg.model.patch_size).warning is None


# ---- the command ---------------------------------------------------------------------------------------

def test_the_lvd_command(digits, sources, tmp_path):
    out = tmp_path / "cli"
    lvd("hires-adapt", "--from", str(sources["grid4"]), "--images", str(digits), "--out", str(out), "--size", "64",
        "--iterations", "2", "train.batch_size_per_gpu=8", "data.workers=0", env={"OMP_NUM_THREADS": "1"})
    manifest = read_manifest(out)
    assert manifest.complete and manifest.stage == "hires-adapt"
    assert manifest.config["crops"]["global_crops_size"] == 64 and manifest.config["train"]["iterations"] == 2
    assert manifest.config["preset"]["name"] == "hires_dinov2"
    assert [r["global_size"] for r in metrics(out)] == [64, 64]
    assert torch.load(out / "backbone.pth", weights_only=True)["pos_embed"].shape == (1, 1 + 64, 32)
    printed = default_config_yaml(*STAGE_CONFIGS["hires-adapt"][:1], PretrainConfig)  # what `lvd config hires-adapt` prints
    assert "stage: hires-adapt" in printed.splitlines()
    assert "global_crops_size: 518" in printed  # the default recipe's size
