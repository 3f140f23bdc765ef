"""Gram anchoring end to end on real images (scikit-learn digits ingested by `lvd crawl-ingest`): a tiny
pretrain run with `gram.enabled` refreshes its Gram teacher from the EMA teacher exactly at the configured
iterations (checked in the DCP checkpoints), logs the Gram loss and weight, resumes bitwise after SIGKILL,
and the DINOv3 high-resolution preset composes with Gram anchoring on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from PIL import Image
from sklearn.datasets import load_digits

from kill_run import run_until_then_kill
from lvd_runner import lvd
from lvdtool.artifacts import read_manifest
from lvdtool.config import compose_config
from lvdtool.errors import ConfigError
from lvdtool.stages import hires_adapt
from lvdtool.train.config import PretrainConfig

N_DIGITS = 48
LOSS_KEYS = ("loss", "dino", "ibot", "koleo", "gram", "gram_weight", "gram_refreshes", "grad_norm")
# refreshes after iterations 1 and 3 (done = 2, 4), then none: at most 2
ARGS = ["recipe=vit_test", "model.patch_size=8", "crops.global_crops_size=32", "crops.local_crops_size=16",
        "crops.n_local_crops=1", "train.log_every=1", "data.workers=0", "train.batch_size_per_gpu=4",
        "train.iterations=7", "checkpoint.every=2", "checkpoint.keep=5", "gram.enabled=true", "gram.weight=1.5",
        "gram.crop_factor=2", "gram.refresh_every=2", "gram.first_refresh=2", "gram.max_refreshes=2",
        "dino.local_weight=0.5"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    data = load_digits()
    for i, pixels in enumerate(data.images[:N_DIGITS]):
        image = Image.fromarray((pixels / 16 * 255).astype(np.uint8), "L").resize((32, 32), Image.Resampling.BICUBIC)
        (root / "src").mkdir(exist_ok=True)
        image.convert("RGB").save(root / "src" / f"d{i:04d}.png")
    lvd("crawl-ingest", "--dir", str(root / "src"), "--out", str(root / "images"), "--shard-size", "500",
        "process.min_side=16", "dedup.perceptual=false", "dedup.exact=false")
    return root / "images"


def env() -> dict[str, str]:
    return {**os.environ, "LVD_QUIET": "1", "OMP_NUM_THREADS": "1"}


def command(stage: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", f"lvdtool.stages.{stage}", *args]


def run(stage: str, args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(stage, args), capture_output=True, text=True, env=env(), timeout=180)
    assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[tuple]:
    return [(r["iteration"], *(r[k] for k in LOSS_KEYS)) for r in metrics(out)]


def model_state(checkpoint: Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    meta = dcp.FileSystemReader(str(checkpoint)).read_metadata().state_dict_metadata
    wanted = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.items()
              if k.startswith(prefixes) and hasattr(m, "size")}
    dcp.load({"model": {k.removeprefix("model."): v for k, v in wanted.items()}}, checkpoint_id=str(checkpoint))
    return wanted


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gram") / "reference"
    args = [*ARGS, f"data.images={digits}"]
    proc = run("pretrain", [*args, f"out={out}"])
    return {"out": out, "args": args, "printed": " ".join((proc.stdout + proc.stderr).split())}


def checkpoint(out: Path, iteration: int) -> Path:
    return out / "checkpoints" / f"ckpt-{iteration:08d}"


def test_the_gram_teacher_is_refreshed_exactly_at_the_configured_iterations(reference):
    out = reference["out"]
    assert "DINO local weight 0.5; Gram anchoring weight 1.5 constant, Gram crops 64 px" in reference["printed"]
    assert "Gram teacher <- the run's starting teacher" in reference["printed"]
    records = metrics(out)
    assert [r["gram_refreshes"] for r in records] == [0, 1, 1, 2, 2, 2, 2]  # after iterations 1 and 3 only
    assert all(r["gram_weight"] == 1.5 and r["dino_local_weight"] == 0.5 and r["gram"] > 0 for r in records)
    assert all(np.isfinite([r[k] for k in LOSS_KEYS]).all() for r in records)
    # in the checkpoints: after 2 and 4 steps the Gram teacher is the EMA teacher of that moment; after
    # 6 it is still the one of step 4 (max_refreshes=2), while the EMA teacher moved on
    states = {it: model_state(checkpoint(out, it), ("model.teacher.backbone.", "model.gram_teacher."))
              for it in (2, 4, 6)}

    def gram_equals_teacher(state: dict, teacher: dict) -> bool:
        keys = [k for k in teacher if k.startswith("model.teacher.backbone.")]
        return bool(keys) and all(torch.equal(state[k.replace("model.teacher.", "model.gram_teacher.")], teacher[k])
                                  for k in keys)

    assert gram_equals_teacher(states[2], states[2]) and gram_equals_teacher(states[4], states[4])
    assert gram_equals_teacher(states[6], states[4]) and not gram_equals_teacher(states[6], states[6])
    assert [int(states[it]["model.gram_teacher.refreshes"]) for it in (2, 4, 6)] == [1, 2, 2]
    # the exported backbone is the EMA teacher's, as without Gram anchoring
    exported = torch.load(out / "backbone.pth", weights_only=True)
    final = model_state(checkpoint(out, 7), ("model.teacher.backbone.",))
    assert all(torch.equal(exported[k], final[f"model.teacher.backbone.{k}"]) for k in exported)


def test_killed_run_rerun_equals_the_uninterrupted_one(reference, tmp_path):
    killed = tmp_path / "killed"
    run_until_then_kill(command("pretrain", [*reference["args"], f"out={killed}"]), checkpoint(killed, 2), env())
    assert not read_manifest(killed).complete, "the run finished before the kill: nothing was interrupted"
    rerun = run("pretrain", [*reference["args"], f"out={killed}"])
    assert "resuming from ckpt-" in " ".join(rerun.stderr.split())
    assert losses(killed) == losses(reference["out"])  # bitwise, the Gram loss and the refresh count included
    final = model_state(checkpoint(killed, 7), ("model.gram_teacher.",))
    expected = model_state(checkpoint(reference["out"], 7), ("model.gram_teacher.",))
    assert set(final) == set(expected) and all(torch.equal(final[k], expected[k]) for k in expected)


def test_the_dinov3_hires_preset_anchors_on_the_source_teacher(digits, reference, tmp_path):
    cfg, resolved = hires_adapt.compose([f"from_run={reference['out']}", f"data.images={digits}",
                                         f"out={tmp_path / 'hr'}", "hires_recipe=dinov3"])
    cfg.validate()
    gram = cfg.gram
    assert (gram.enabled, gram.weight, gram.ramp_start, gram.ramp_iterations) == (True, 1.5, 0, 0)
    assert (gram.crop_factor, gram.refresh_every, gram.teacher) == (1.5, 0, None)
    assert [(r.global_size, r.gram_size) for r in cfg.crops.resolutions][:2] == [(512, 768), (768, 1152)]
    assert cfg.dino.local_weight == 0.5 and cfg.dino.koleo_group_size is None
    # the keys the preset sets are the phase's: the official no-flip, not the source run's 0.5
    assert read_manifest(reference["out"]).config["crops"]["flip_prob"] == 0.5 and cfg.crops.flip_prob == 0.0
    assert cfg.crops.local_crops_size == 16  # what the preset leaves alone is still carried
    assert resolved["dino"]["local_weight"] == 0.5
    cfg, _ = hires_adapt.compose([f"from_run={reference['out']}", f"data.images={digits}", f"out={tmp_path / 'hr'}",
                                  "hires_recipe=dinov2", "crops.global_crops_size=64"])
    assert not cfg.gram.enabled and cfg.dino.local_weight == 1.0  # not carried from the source (0.5)
    assert cfg.crops.flip_prob == 0.5


def test_hires_adapt_anchors_on_the_from_teacher_which_is_never_refreshed(digits, reference, tmp_path):
    out = tmp_path / "hires"
    proc = run("hires_adapt", [f"from_run={reference['out']}", f"data.images={digits}", f"out={out}",
                               "crops.global_crops_size=40", "train.iterations=2", "checkpoint.every=2",
                               "train.batch_size_per_gpu=4", "data.workers=0", "train.log_every=1",
                               "gram.enabled=true", "gram.crop_factor=1.5", "gram.weight=1.5"])
    assert "gram: Gram teacher <- the run's starting teacher; never refreshed" in " ".join(proc.stderr.split())
    records = metrics(out)
    assert [r["gram_refreshes"] for r in records] == [0, 0] and all(r["gram"] > 0 for r in records)
    source = model_state(checkpoint(reference["out"], 7), ("model.teacher.backbone.",))
    gram = model_state(checkpoint(out, 2), ("model.gram_teacher.backbone.",))
    assert gram and all(torch.equal(v, source[k.replace("gram_teacher.", "teacher.")]) for k, v in gram.items())


def test_gram_teacher_from_another_run(digits, reference, tmp_path):
    from lvdtool.train.networks import pretrain_networks
    from lvdtool.train.source_run import open_source

    cfg, _ = compose_config("pretrain", [*ARGS, f"data.images={digits}", f"out={tmp_path / 'new'}",
                                         f"gram.teacher={reference['out']}"], PretrainConfig)
    built = pretrain_networks(cfg, resuming=False, previous_inputs=[])
    assert [ref.role for ref in built.inputs] == ["gram_teacher"]
    assert f"Gram teacher <- the teacher of pretrain run {reference['out']} at iteration 7" in built.lines[-1]
    expected = {k.removeprefix("backbone."): v for k, v in open_source(reference["out"]).teacher_state().items()
                if k.startswith("backbone.")}
    own = built.meta.gram_teacher.backbone.state_dict()
    assert set(own) == set(expected) and all(torch.equal(own[k], expected[k]) for k in expected)
    # the student and EMA teacher are this run's random init, not the Gram teacher's weights
    assert not torch.equal(built.meta.teacher.backbone.state_dict()["cls_token"], expected["cls_token"])


@pytest.mark.parametrize("override, key", [
    ("gram.weight=-1", "gram.weight"),
    ("gram.crop_factor=0.5", "gram.crop_factor"),
    ("gram.max_refreshes=-1", "gram.max_refreshes"),
    ("gram.crop_size=16", "gram.crop_size"),
    ("gram.refresh_every=-2", "gram.refresh_every"),
])
def test_bad_gram_keys_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:  # a range check when composing, or a cross-key check in validate()
        cfg, _ = compose_config("pretrain", ["data.images=/x", "out=/y", "recipe=vit_test", "gram.enabled=true",
                                             override], PretrainConfig)
        cfg.validate()
    assert key in str(info.value) and "\n" not in str(info.value)
    cfg, _ = compose_config("pretrain", ["data.images=/x", "out=/y", "dino.local_weight_ramp=true"], PretrainConfig)
    with pytest.raises(ConfigError, match="dino.local_weight_ramp.*gram.enabled"):
        cfg.validate()
