"""`lvd distill` end to end on real images (scikit-learn digits ingested by `lvd crawl-ingest`): a tiny
teacher run (vit_test at patch 8, 48 wide) distilled into two 32-wide students at once (vit_test and
vit_micro8): one teacher forward per batch, the frozen teacher untouched, EMA students, no masking,
exact resume after SIGKILL, the exported EMA in `lvd probe`, the one-line errors and the CLI.

The stage runs in-process (`compose` + `Pretrainer`, as `run_pretraining` does), as
`python -m lvdtool.stages.distill` (what `lvd distill` calls) and through the real console script.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from kill_run import run_until_then_kill
from lvd_runner import lvd
from lvdtool.artifacts import read_manifest
from lvdtool.cli import STAGE_CONFIGS
from lvdtool.config import default_config_yaml
from lvdtool.errors import ArtifactError, ConfigError
from lvdtool.models import build_backbone, load_backbone
from lvdtool.stages import distill
from lvdtool.train.config import PretrainConfig
from lvdtool.train.distributed import init_distributed
from lvdtool.train.loop import Pretrainer
from lvdtool.train.networks import distill_networks
from lvdtool.train.source_run import open_source

STUDENTS = ("vit_test", "vit_micro8")
TEACHER_WIDTH, STUDENT_WIDTH = 48, 32  # the frozen teacher is wider than both students
LOSS_KEYS = ("loss", "dino", "ibot", "koleo", "grad_norm")  # the run's, and each student's as "<arch>.<key>"
TEACHER_ARGS = ["recipe=vit_test", "model.patch_size=8", "model.img_size=32", f"model.embed_dim={TEACHER_WIDTH}",
                "crops.global_crops_size=32", "crops.local_crops_size=16", "train.log_every=1", "data.workers=0",
                "train.batch_size_per_gpu=8", "train.iterations=6", "checkpoint.every=3"]
SMALL = ["model.patch_size=8", "model.img_size=32", "distill_recipe=small_data", "train.batch_size_per_gpu=8",
         "data.workers=0", "train.log_every=1"]
TWO = "distill.students=[" + ",".join(STUDENTS) + "]"


def env() -> dict[str, str]:
    return {**os.environ, "LVD_QUIET": "1", "OMP_NUM_THREADS": "1"}


def module_run(module: str, args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env(),
                          timeout=timeout)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(records: list[dict]) -> list[tuple]:
    keys = LOSS_KEYS + tuple(f"{s}.{k}" for s in STUDENTS for k in LOSS_KEYS)
    return [(r["iteration"], *(r[k] for k in keys)) for r in records]


def full_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded copies of an FSDP-wrapped module's state (collective: under the process group)."""
    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().clone() for k, v in state.items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- data: labelled digits (train 300 / val 150, ten folders each) and a tiny teacher run ------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distill")
    digits = load_digits()
    for split, indices in {"train": range(0, 300), "val": range(300, 450)}.items():
        for i in indices:
            pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
            image = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC)
            folder = root / split / f"d{digits.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            image.convert("RGB").save(folder / f"{i}.png")
    out = {"root": root}
    for split in ("train", "val"):
        out[split] = root / f"{split}_images"
        lvd("crawl-ingest", "--dir", str(root / split), "--label-from-dir", "--out", str(out[split]),
            "process.min_side=16", "dedup.perceptual=false", "dedup.exact=false")
    out["teacher"] = root / "teacher"
    module_run("lvdtool.stages.pretrain", [*TEACHER_ARGS, f"data.images={out['train']}", f"out={out['teacher']}"])
    assert read_manifest(out["teacher"]).complete
    return out


def distill_args(data: dict[str, Path], out: Path, *extra: str, students: str = TWO) -> list[str]:
    return [f"distill.teacher={data['teacher']}", students, *SMALL, f"data.images={data['train']}", f"out={out}",
            *extra]


# ---- 1. two students, one teacher forward per batch (in process) -----------------------------------

N_ITERATIONS = 3


@pytest.fixture(scope="module")
def trained(data) -> dict:
    """Two students trained together for N_ITERATIONS in this process; everything the tests compare
    is read under the process group (the networks are FSDP-wrapped) before it is closed."""
    out = data["root"] / "two_students"
    cfg, resolved = distill.compose(distill_args(data, out, f"train.iterations={N_ITERATIONS}", "checkpoint.every=2"))
    env = init_distributed("cpu")
    try:
        trainer = Pretrainer(cfg, resolved, env)
        meta = trainer.meta
        init = {name: {"student": full_state(meta.pairs[name].student), "ema": full_state(meta.pairs[name].teacher)}
                for name in meta.names}
        teacher_before = full_state(meta.teacher)
        summary = trainer.run()
        result = {
            "out": out, "cfg": cfg, "summary": summary, "names": list(meta.names),
            "teacher_forwards": meta.teacher_forwards, "init": init, "teacher_before": teacher_before,
            "teacher_after": full_state(meta.teacher), "teacher_training": meta.teacher.training,
            "teacher_grads": [p.requires_grad for p in meta.teacher.parameters()],
            "final": {name: {"student": full_state(meta.pairs[name].student), "ema": full_state(meta.pairs[name].teacher)}
                      for name in meta.names},
            "batch": next(iter(trainer.loader)),  # a real collated batch (masks sampled), for the masking test
        }
    finally:
        env.close()
    return result


def test_two_students_share_one_frozen_teacher_forward_per_batch(data, trained):
    assert trained["summary"].complete and trained["names"] == list(STUDENTS)
    assert trained["teacher_forwards"] == N_ITERATIONS  # once per batch, not once per student
    records = metrics(trained["out"])
    assert [r["iteration"] for r in records] == list(range(N_ITERATIONS))
    for r in records:
        for name in STUDENTS:
            assert all(np.isfinite(r[f"{name}.{k}"]) for k in LOSS_KEYS), r
        assert r["loss"] == pytest.approx(r["vit_test.loss"] + r["vit_micro8.loss"], rel=1e-5)
        assert r["dino"] == pytest.approx((r["vit_test.dino"] + r["vit_micro8.dino"]) / 2, rel=1e-5)
        assert r["grad_norm"] == max(r["vit_test.grad_norm"], r["vit_micro8.grad_norm"])
        assert r["vit_test.dino"] != r["vit_micro8.dino"]  # two networks, two losses

    # the frozen teacher: exactly the teacher of the teacher run's newest checkpoint, before and after
    stored = open_source(data["teacher"], role="teacher").teacher_state()
    assert same(trained["teacher_before"], stored)
    assert same(trained["teacher_after"], stored)
    assert trained["teacher_after"]["backbone.cls_token"].shape[-1] == TEACHER_WIDTH
    assert not trained["teacher_training"] and not any(trained["teacher_grads"])

    for name in STUDENTS:
        init, final = trained["init"][name], trained["final"][name]
        assert same(init["student"], init["ema"])  # the EMA starts as a copy of its student
        assert init["student"]["backbone.cls_token"].shape[-1] == STUDENT_WIDTH
        assert not same(final["student"], init["student"]), f"{name}: the student did not train"
        assert not same(final["ema"], init["ema"]), f"{name}: the EMA did not move"
        assert not same(final["ema"], final["student"]), f"{name}: the EMA is not a separate copy"
        # the exported backbone.pth is the EMA's backbone
        exported = torch.load(trained["out"] / name / "backbone.pth", weights_only=True)
        ema_backbone = {k.removeprefix("backbone."): v for k, v in final["ema"].items() if k.startswith("backbone.")}
        assert exported.keys() == ema_backbone.keys()
        assert all(torch.equal(exported[k], ema_backbone[k]) for k in exported)

    manifest = read_manifest(trained["out"])
    assert manifest.complete and manifest.stage == "distill"
    assert [s["name"] for s in manifest.shards] == [f"{name}/backbone.pth" for name in STUDENTS]
    assert any(ref.role == "teacher" for ref in manifest.inputs)
    for name in STUDENTS:
        student = read_manifest(trained["out"] / name)
        assert student.complete and student.config["model"]["arch"] == name
        assert [s["name"] for s in student.shards] == ["backbone.pth"]


# ---- 2. students: unmasked global crops, no drop path, the teacher's patch size ---------------------

def test_students_ignore_masks_and_have_no_drop_path(data, trained):
    cfg = trained["cfg"]
    assert cfg.model.drop_path_rate == 0.0
    meta = distill_networks(cfg, resuming=False).meta  # unwrapped: the same networks, single device
    for name in STUDENTS:
        config = meta.pairs[name].student.backbone.config
        assert config.drop_path_rate == 0.0 and config.patch_size == 8
        # never masked: the mask token is frozen (no gradient ever reaches it, so no optimizer state)
        assert not meta.pairs[name].student.backbone.mask_token.requires_grad
    meta.train()
    batch = trained["batch"]
    assert batch["masks"].any(), "the collate sampled no mask: the test would prove nothing"
    unmasked = {**batch, "masks": torch.zeros_like(batch["masks"])}
    with torch.no_grad():
        torch.manual_seed(0)
        with_masks = meta(batch, 0.04)
        torch.manual_seed(0)
        without = meta(unmasked, 0.04)
        # given masks, a student's output does change (what pretraining does): the comparison is sensitive
        student = meta.pairs["vit_test"].student
        masked = student(batch["global_crops"], None, batch["masks"], batch["mask_indices"])["cls_tokens"]
        plain = student(batch["global_crops"], None, None, batch["mask_indices"])["cls_tokens"]
    assert not torch.equal(masked, plain)
    assert with_masks.keys() == without.keys() and {"vit_test.ibot", "vit_micro8.ibot"} <= with_masks.keys()
    for key in with_masks:
        assert torch.equal(with_masks[key], without[key]), key
    assert meta.teacher_forwards == 2


def test_a_student_with_another_patch_size_is_a_config_error(data, tmp_path):
    # vit_test without the patch-8 / 32 px overrides: patch 14 at 56 px, the teacher's patch is 8
    args = [a for a in distill_args(data, tmp_path / "bad", "train.iterations=1", students="distill.students=[vit_test]")
            if not a.startswith(("model.patch_size=", "model.img_size="))]
    with pytest.raises(ConfigError, match=r"student vit_test has patch size 14, the teacher 8"):
        distill.main(args)


# ---- 3. exact resume after SIGKILL (two students, one process) ----------------------------------------

RESUME_ITERATIONS = 8


def test_killed_distill_rerun_equals_uninterrupted_and_checkpoints_hold_only_the_students(data, tmp_path):
    args = [f"train.iterations={RESUME_ITERATIONS}", "checkpoint.every=2"]
    reference = tmp_path / "reference"
    module_run("lvdtool.stages.distill", distill_args(data, reference, *args))
    assert read_manifest(reference).complete
    assert [r["iteration"] for r in metrics(reference)] == list(range(RESUME_ITERATIONS))

    killed = tmp_path / "killed"
    # the second student's first checkpoint: both students then hold ckpt-2 (saved in order)
    first = killed / STUDENTS[-1] / "checkpoints" / "ckpt-00000002"
    run_until_then_kill([sys.executable, "-m", "lvdtool.stages.distill", *distill_args(data, killed, *args)], first, env())
    assert not read_manifest(killed).complete, "the run finished before the kill: nothing was interrupted"

    rerun = module_run("lvdtool.stages.distill", distill_args(data, killed, *args))  # the same command again
    resumed = re.search(r"resuming from ckpt-(\d{8}): iteration (\d+),", " ".join(rerun.stderr.split()))
    assert resumed and int(resumed.group(1)) == int(resumed.group(2)) >= 2, rerun.stderr[-2000:]
    assert read_manifest(killed).complete
    assert [r["iteration"] for r in metrics(killed)] == list(range(RESUME_ITERATIONS))
    assert losses(metrics(killed)) == losses(metrics(reference))  # bitwise: floats compared exactly
    for name in STUDENTS:
        assert not list((killed / name / "checkpoints").glob("*.tmp"))
        final = torch.load(killed / name / "backbone.pth", weights_only=True)
        expected = torch.load(reference / name / "backbone.pth", weights_only=True)
        assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in expected)

    # a student's checkpoint: its StudentPair (student + EMA) and optimizer, never the frozen teacher
    for name in STUDENTS:
        path = killed / name / "checkpoints" / f"ckpt-{RESUME_ITERATIONS:08d}"
        keys = FileSystemReader(str(path)).read_metadata().state_dict_metadata
        assert all(k.startswith(("model.student.", "model.teacher.", "optim.")) for k in keys), sorted(keys)[:5]
        ema = {k: v for k, v in keys.items() if k.startswith("model.teacher.") and isinstance(v, TensorStorageMetadata)}
        student = {k for k in keys if k.startswith("model.student.")}
        assert {k.replace("model.teacher.", "model.student.") for k in ema} == student
        assert ema["model.teacher.backbone.cls_token"].size[-1] == STUDENT_WIDTH
        own = build_backbone(name, patch_size=8, img_size=32)
        blocks = {k.split(".")[4] for k in ema if k.startswith("model.teacher.backbone.blocks.")}
        assert blocks == {str(i) for i in range(own.config.depth)}  # the student's depth (vit_test 2, vit_micro8 4)
        backbone = {k.removeprefix("model.teacher.backbone."): tuple(v.size) for k, v in ema.items()
                    if k.startswith("model.teacher.backbone.")}
        assert backbone == {k: tuple(v.shape) for k, v in own.state_dict().items()}  # the student's own tensors
        assert any(k.startswith("model.teacher.dino_head.") for k in ema)


# ---- 4. the exported EMA in lvd probe ------------------------------------------------------------------

def test_the_exported_ema_backbone_loads_in_lvd_probe(data, trained, tmp_path):
    weights = trained["out"] / "vit_micro8" / "backbone.pth"
    model = load_backbone(weights)
    assert model.embed_dim == STUDENT_WIDTH and model.config.depth == 4 and model.config.patch_size == 8
    report = tmp_path / "report"
    lvd("probe", "--weights", str(weights), "--train", str(data["train"]), "--val", str(data["val"]), "--out",
        str(report), "resolution=32", "resize=32", "linear.epochs=2", "linear.lrs=[0.01]", "workers=0",
        "pca_images=0")
    result = json.loads((report / "report.json").read_text())
    assert result["data"]["train_images"] == 300 and result["data"]["val_images"] == 150
    assert result["knn"] and all(0 <= v["top1"] <= 100 for v in result["knn"].values())
    assert read_manifest(report).complete


# ---- 5. errors ------------------------------------------------------------------------------------------

def test_distill_errors_are_one_line(data, trained, tmp_path):
    with pytest.raises(ConfigError, match="distill needs a teacher"):
        distill.compose([TWO, *SMALL, f"data.images={data['train']}", f"out={tmp_path / 'a'}"])
    with pytest.raises(ConfigError, match="a student arch is named twice"):
        distill.main(distill_args(data, tmp_path / "b", "train.iterations=1",
                                  students="distill.students=[vit_micro8,vit_micro8]"))
    run = trained["out"]
    with pytest.raises(ArtifactError, match="is a distill run of 2 students") as info:
        distill.compose([f"distill.teacher={run}", "distill.students=[vit_micro8]", *SMALL,
                         f"data.images={data['train']}", f"out={tmp_path / 'c'}"])
    assert all(str(run / name) in str(info.value) for name in STUDENTS)
    assert "\n" not in str(info.value)


def test_a_backbone_file_as_teacher_is_accepted_with_a_caveat(data, tmp_path, capfd):
    out = tmp_path / "from_file"
    teacher_file = data["teacher"] / "backbone.pth"
    distill.main([f"distill.teacher={teacher_file}", "distill.students=[vit_micro8]", *SMALL,
                  f"data.images={data['train']}", f"out={out}", "train.iterations=1", "dino.prototypes=256",
                  "dino.hidden_dim=64", "dino.bottleneck_dim=32", "ibot.separate_head=false"])
    captured = capfd.readouterr()
    assert "random projections" in " ".join((captured.out + captured.err).split())
    assert read_manifest(out).complete and (out / "vit_micro8" / "backbone.pth").is_file()
    assert [ref.kind for ref in read_manifest(out).inputs if ref.role == "teacher"] == ["file"]


# ---- 6. the CLI ------------------------------------------------------------------------------------------

def test_lvd_distill_cli_and_lvd_config(data, tmp_path):
    out = tmp_path / "cli"
    lvd("distill", "--teacher", str(data["teacher"]), "--arch", "vit_micro8", "--images", str(data["train"]),
        "--out", str(out), "--recipe", "small_data", "--iterations", "2", "model.patch_size=8",
        "train.batch_size_per_gpu=8", "data.workers=0", env={"OMP_NUM_THREADS": "1"})
    assert (out / "vit_micro8" / "backbone.pth").is_file()
    manifest = read_manifest(out)
    assert manifest.complete and manifest.kind == "checkpoint" and manifest.stage == "distill"
    assert [s["name"] for s in manifest.shards] == ["vit_micro8/backbone.pth"]
    assert manifest.extra["students"] == ["vit_micro8"] and manifest.extra["iteration"] == 2
    assert manifest.config["distill"]["students"] == ["vit_micro8"]
    assert read_manifest(out / "vit_micro8").complete
    assert load_backbone(out / "vit_micro8" / "backbone.pth").embed_dim == STUDENT_WIDTH
    shown = default_config_yaml(*STAGE_CONFIGS["distill"][:1], PretrainConfig)  # what `lvd config distill` prints
    assert "stage: distill" in shown and "teacher:" in shown
