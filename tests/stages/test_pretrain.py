"""`pretrain` end to end on real images (scikit-learn digits ingested by `lvd crawl-ingest`):
2-rank FSDP2/gloo run killed with SIGKILL and resumed bitwise, resume at another world size,
non-finite loss, continued pretraining from a backbone file, the collapse guard. Learning (k-NN vs
random init) is in test_learning.py.

The stage runs as `python -m lvdtool.stages.pretrain` / `torchrun -m lvdtool.stages.pretrain`
(the same `main` the `lvd pretrain` command calls) or in-process through `main`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from digits_runs import BIN, env, make_digits, metrics, run_stage
from kill_run import run_until_then_kill
from lvdtool.artifacts import read_manifest
from lvdtool.errors import TrainingError
from lvdtool.models import build_backbone, load_backbone, save_backbone
from lvdtool.stages import pretrain

LOSS_KEYS = ("loss", "dino", "ibot", "koleo", "grad_norm")
TINY_MODEL = {"patch_size": 8, "img_size": 32}
TINY = ["recipe=vit_test", "model.patch_size=8", "model.img_size=32", "crops.global_crops_size=32",
        "crops.local_crops_size=16", "train.log_every=1"]


# ---- data: all 1797 digits at 32 px (an images artifact) and a selection of 4/5 of them ---------

@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    return make_digits(tmp_path_factory.mktemp("digits"))


def losses(records: list[dict]) -> list[tuple]:
    return [(r["iteration"], *(r[k] for k in LOSS_KEYS)) for r in records]


# ---- exact resume -----------------------------------------------------------------------------------

def test_two_rank_run_killed_and_rerun_equals_uninterrupted_and_resumes_on_one_rank(digits, tmp_path):
    args = [*TINY, f"data.images={digits['images']}", "train.batch_size_per_gpu=4", "train.iterations=40",
            "checkpoint.every=10", "data.workers=0"]
    reference = tmp_path / "reference"
    run_stage([*args, f"out={reference}"], nproc=2)
    assert read_manifest(reference).complete
    assert [r["iteration"] for r in metrics(reference)] == list(range(40))

    killed = tmp_path / "killed"
    launcher = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "lvdtool.stages.pretrain"]
    first = killed / "checkpoints" / "ckpt-00000010"
    run_until_then_kill([*launcher, *args, f"out={killed}"], first, env())  # the launcher and both ranks, mid-run
    assert not read_manifest(killed).complete, "the run finished before the kill: nothing was interrupted"
    one_rank = tmp_path / "one_rank"
    shutil.copytree(killed, one_rank)

    run_stage([*args, f"out={killed}"], nproc=2)  # the same command again
    assert read_manifest(killed).complete
    assert losses(metrics(killed)) == losses(metrics(reference))  # bitwise: floats compared exactly
    assert not list((killed / "checkpoints").glob("*.tmp"))
    final = torch.load(killed / "backbone.pth", weights_only=True)
    expected = torch.load(reference / "backbone.pth", weights_only=True)
    assert all(torch.equal(final[k], expected[k]) for k in expected)

    # The 2-rank checkpoint resumed by one process: DCP reshards, the data position carries over.
    resumed_at = max(int(p.name.split("-")[1]) for p in (one_rank / "checkpoints").glob("ckpt-????????"))
    state = json.loads((one_rank / "checkpoints" / f"ckpt-{resumed_at:08d}" / "state.json").read_text())
    assert state["world_size"] == 2 and state["data"]["offset"] == resumed_at * 8
    proc = run_stage([*args, f"out={one_rank}"], nproc=1)
    assert f"resuming from ckpt-{resumed_at:08d}: iteration {resumed_at}," in " ".join(proc.stderr.split())
    records = metrics(one_rank)
    assert [r["iteration"] for r in records] == list(range(40))
    assert losses(records[:resumed_at]) == losses(metrics(reference)[:resumed_at])
    assert all(np.isfinite([r[k] for k in LOSS_KEYS]).all() for r in records[resumed_at:])
    assert read_manifest(one_rank).complete and read_manifest(one_rank).extra["plan"]["global_batch"] == 8


# ---- failure and continued pretraining (in process) -------------------------------------------------

def test_non_finite_loss_stops_with_a_training_error_and_keeps_the_last_checkpoint(digits, tmp_path):
    out = tmp_path / "diverged"
    args = [*TINY, f"data.images={digits['images']}", f"out={out}", "train.iterations=6", "checkpoint.every=1",
            "optim.warmup_epochs=0", "optim.base_lr=1e30"]
    with pytest.raises(TrainingError, match=r"iteration 1: the (dino|ibot|koleo|total) loss is not finite") as info:
        pretrain.main(args)
    assert "ckpt-00000001" in str(info.value) and "\n" not in str(info.value)
    assert not dist.is_initialized()  # the stage closed the process group it opened
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["ckpt-00000001"]
    load_backbone(out / "checkpoints" / "ckpt-00000001" / "backbone.pth", arch="vit_test", **TINY_MODEL)
    assert [r["iteration"] for r in metrics(out)] == [0]
    assert not read_manifest(out).complete


def test_continued_pretraining_from_a_backbone_file(digits, tmp_path, capfd):
    torch.manual_seed(123)
    init = tmp_path / "init.pth"
    save_backbone(build_backbone("vit_test", **TINY_MODEL), init)
    out = tmp_path / "continued"
    pretrain.main([*TINY, f"data.images={digits['images']}", f"out={out}", f"init={init}", "train.iterations=1"])
    assert "heads start from random init" in " ".join(capfd.readouterr().err.split())
    start = torch.load(init, weights_only=True)
    teacher = torch.load(out / "backbone.pth", weights_only=True)
    torch.manual_seed(0)
    fresh = build_backbone("vit_test", **TINY_MODEL).state_dict()
    moved = sum((teacher[k] - start[k]).norm() for k in start)
    apart = sum((fresh[k] - start[k]).norm() for k in start)
    assert moved < 0.05 * apart  # one EMA step (momentum 0.992) away from the loaded weights
    assert any(ref.role == "init" for ref in read_manifest(out).inputs)


def test_collapse_guard_stops_a_collapsing_run(digits, tmp_path):
    """The configuration the issue reported (vit_test, LayerScale 1e-5, a zero centre, the paper's momentum
    over a short run) goes uniform within tens of iterations; with train.stop_on_collapse it stops with one
    TrainingError naming the knobs."""
    out = tmp_path / "collapse"
    with pytest.raises(TrainingError, match=r"collapse at iteration \d+: since iteration \d+ .*Knobs that matter: "
                                            r"teacher.momentum.*Stopped \(train.stop_on_collapse=true\)"):
        pretrain.main([*TINY, f"data.images={digits['images']}", f"out={out}", "train.batch_size_per_gpu=32",
                       "train.iterations=400", "train.log_every=10", "checkpoint.every=1000",
                       "train.stop_on_collapse=true", "train.collapse_window=40", "data.workers=0"])
    iterations = [r["iteration"] for r in metrics(out)]
    assert iterations and iterations[-1] < 399  # stopped early, not at the end
