"""Does pretraining learn? The README's small-data recipe trained once on real images (scikit-learn
digits): k-NN far above the same network at random init and close to raw pixels, and a student
distilled from it. These are the suite's few-CPU-minute runs (`slow`), in their own file so that
under `make test`'s two workers the rest of the pretraining tests run beside them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from digits_runs import env, make_digits, metrics, run_stage
from lvdtool.artifacts import ImagesArtifact
from lvdtool.data.eval_transform import EvalTransform, normalize_batch
from lvdtool.eval.knn import knn_classify
from lvdtool.models import build_backbone, load_backbone


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    return make_digits(tmp_path_factory.mktemp("digits"))


def cls_features(model: torch.nn.Module, images: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    samples = sorted(ImagesArtifact(images).iter_samples(), key=lambda s: s.key)
    transform = EvalTransform(crop=32, resize=32)
    x = normalize_batch(torch.stack([transform(s.data) for s in samples]))
    with torch.no_grad():
        feats = model.eval()(x)["x_norm_clstoken"]
    return feats, torch.tensor([int(s.meta["label"]) for s in samples]), [s.key for s in samples]


def knn_top1(model: torch.nn.Module, images: Path, train_keys: set[str]) -> float:
    feats, labels, keys = cls_features(model, images)
    train = torch.tensor([k in train_keys for k in keys])
    result = knn_classify(feats[train], labels[train], feats[~train], labels[~train], ks=(20,))
    return result[20]["top1"]


def raw_pixel_top1(images: Path, train_keys: set[str]) -> float:
    samples = sorted(ImagesArtifact(images).iter_samples(), key=lambda s: s.key)
    transform = EvalTransform(crop=32, resize=32)
    x = normalize_batch(torch.stack([transform(s.data) for s in samples])).flatten(1)
    y = torch.tensor([int(s.meta["label"]) for s in samples])
    train = torch.tensor([s.key in train_keys for s in samples])
    return knn_classify(x[train], y[train], x[~train], y[~train], ks=(20,))[20]["top1"]


LEARN_ITERATIONS = 800  # about 2.5 minutes on 2 CPU cores
LEARN_GAP_TO_PIXELS = 5  # percentage points below raw pixels at most
SMALL_DATA = ["recipe=small_data", "crops.flip_prob=0", "train.log_every=10", "checkpoint.every=100000"]


@pytest.fixture(scope="module")
def learned(digits, tmp_path_factory) -> dict:
    """The README's small-data recipe trained once, 800 iterations on the 1437 training digits (about 2.5
    minutes on 2 cores): the learning test checks it, the distillation test uses it as its teacher."""
    out = tmp_path_factory.mktemp("learn") / "run"
    # a fresh process, as `lvd pretrain` runs (its DataLoader workers fork a clean parent)
    proc = run_stage([*SMALL_DATA, f"data.images={digits['images']}", f"data.selection={digits['selection']}",
                      f"out={out}", f"train.iterations={LEARN_ITERATIONS}"], timeout=1700, threads=2)
    train_keys = set(pq.read_table(digits["selection"] / "shards" / "selection-000000.parquet").column("key").to_pylist())
    return {"out": out, "printed": " ".join((proc.stdout + proc.stderr).split()), "train_keys": train_keys}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the shared learning run is built in the first one's setup; under xdist it shares the cores
def test_small_data_recipe_learns_on_real_images_and_the_guard_stays_silent(digits, learned):
    """The DINO loss ends clearly below ln K, and k-NN on the 360 held-out digits is far above the same
    network at random init and close to raw pixels (numbers in docs/pretrain.md)."""
    out, printed, train_keys = learned["out"], learned["printed"], learned["train_keys"]
    assert "recipe small_data (lvd's preset, not the paper's)" in printed
    assert "collapse" not in printed
    last = metrics(out)[-1]
    assert last["dino"] < 0.96 * np.log(1024), last  # measured 6.47 = 0.93 ln K
    assert last["teacher_mi"] > 0.3, last  # nats the teacher's target carries about the image (measured 0.56)
    torch.manual_seed(0)  # train.seed: the run's starting weights
    random_init = knn_top1(build_backbone("vit_mini8"), digits["images"], train_keys)
    trained = knn_top1(load_backbone(out / "backbone.pth"), digits["images"], train_keys)
    raw = raw_pixel_top1(digits["images"], train_keys)
    print(f"k-NN top-1 (k=20) on held-out digits: random init {random_init:.1f}%, pretrained {trained:.1f}%, "
          f"raw pixels {raw:.1f}%; final DINO {last['dino']:.3f} (ln K {np.log(1024):.3f})")
    assert trained > random_init + 25
    assert trained > raw - LEARN_GAP_TO_PIXELS


DISTILL_ITERATIONS = 200  # under a minute on 2 CPU cores (the teacher trained 800); measured 93.3% (teacher 96.1%)
STUDENT_GAP_TO_TEACHER = 5  # percentage points below the teacher at most


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the shared learning run is built in the first one's setup; under xdist it shares the cores
def test_distilled_student_learns_from_the_trained_teacher(digits, learned, tmp_path):
    """`lvd distill` with the small_data preset: a student of the teacher's architecture, from its own random
    init, trained only on the frozen teacher's targets, reaches a k-NN accuracy close to the teacher's and far
    above its random init in a fraction of the teacher's iterations (numbers, and the smaller vit_micro8
    student, in docs/hires_distill.md)."""
    out = tmp_path / "distill"
    args = [f"distill.teacher={learned['out']}", "distill.students=[vit_mini8]", "distill_recipe=small_data",
            "crops.flip_prob=0", f"data.images={digits['images']}", f"data.selection={digits['selection']}",
            f"out={out}", f"train.iterations={DISTILL_ITERATIONS}", "train.log_every=50", "checkpoint.every=100000"]
    proc = subprocess.run([sys.executable, "-m", "lvdtool.stages.distill", *args], capture_output=True, text=True,
                          env={**env(), "OMP_NUM_THREADS": "2"}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = " ".join((proc.stdout + proc.stderr).split())
    assert "frozen teacher vit_mini8 <- the teacher of pretrain run" in printed
    assert "collapse" not in printed
    train_keys = learned["train_keys"]
    teacher = knn_top1(load_backbone(learned["out"] / "backbone.pth"), digits["images"], train_keys)
    torch.manual_seed(0)
    random_init = knn_top1(build_backbone("vit_mini8"), digits["images"], train_keys)  # the student's init
    student = knn_top1(load_backbone(out / "vit_mini8" / "backbone.pth"), digits["images"], train_keys)
    last = metrics(out)[-1]
    print(f"k-NN top-1 (k=20) on held-out digits: teacher {teacher:.1f}%, distilled student {student:.1f}%, "
          f"student at random init {random_init:.1f}%; final student DINO {last['dino']:.3f}")
    assert student > random_init + 25
    assert student > teacher - STUDENT_GAP_TO_TEACHER
