"""FSDP2 wrapping on a 1-rank gloo group: same numbers as the plain model, with and without
activation checkpointing; bf16 parameters; the teacher EMA through sharded parameters."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from lvdtool.data.augment import collate_multicrop
from lvdtool.models import build_backbone
from lvdtool.ssl import HeadConfig, MetaArchConfig, SSLMetaArch
from lvdtool.ssl.masking import BatchMaskSampler
from lvdtool.train.distributed import init_distributed
from lvdtool.train.parallelize import ParallelPlan, parallelize


@pytest.fixture
def group():
    env = init_distributed("cpu")
    assert env.owns_group and env.world_size == 1
    yield env
    env.close()
    assert not dist.is_initialized()


def meta() -> SSLMetaArch:
    torch.manual_seed(0)
    backbone = build_backbone("vit_test", patch_size=8, img_size=32, drop_path_rate=0.3, layerscale_init=0.1)
    return SSLMetaArch(backbone, MetaArchConfig(dino_head=HeadConfig(64, 32, 16), ibot_head=HeadConfig(48, 32, 16)))


def batch() -> dict:
    gen = torch.Generator().manual_seed(0)
    samples = [{"global_crops": list(torch.randn(2, 3, 32, 32, generator=gen)),
                "local_crops": list(torch.randn(2, 3, 16, 16, generator=gen))} for _ in range(4)]
    return collate_multicrop(samples, BatchMaskSampler((4, 4), mask_prob=1.0), np.random.default_rng(0))


def loss_and_grads(model: SSLMetaArch) -> tuple[dict, dict]:
    model.train()
    torch.manual_seed(5)  # the same stochastic-depth draws
    losses = model(batch(), teacher_temp=0.05)
    losses["loss"].backward()
    grads = {}
    for name, p in model.student.named_parameters():
        grad = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        grads[name] = grad
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation-checkpointing"])
def test_sharded_model_matches_the_plain_model(group, checkpointing):
    reference_losses, reference_grads = loss_and_grads(meta())
    sharded = parallelize(meta(), ParallelPlan(group.device, 1, torch.float32, activation_checkpointing=checkpointing))
    assert isinstance(sharded.student.backbone.blocks[0].attn.qkv.weight, DTensor)
    assert isinstance(sharded.teacher.dino_head.last_layer.weight_v, DTensor)
    losses, grads = loss_and_grads(sharded)
    for key in reference_losses:
        assert torch.allclose(losses[key], reference_losses[key], rtol=1e-5, atol=1e-6), key
    assert grads.keys() == reference_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, reference_grads[name], rtol=1e-4, atol=1e-6), name


def test_bf16_parameters_and_sharded_teacher_ema(group):
    model = parallelize(meta(), ParallelPlan(group.device, 1, torch.bfloat16))
    losses, _ = loss_and_grads(model)
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.student.backbone.pos_embed.dtype == torch.float32  # sharded master weights stay fp32
    before = [p.full_tensor().clone() for p in model.teacher.parameters()]
    student = [p.full_tensor().clone() for p in model.student.parameters()]
    model.update_teacher(0.9)
    after = [p.full_tensor() for p in model.teacher.parameters()]
    for t0, s, t1 in zip(before, student, after):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s, atol=1e-6)
    # the next teacher forward sees the updated weights (no stale gathered copy): momentum 0 makes
    # the teacher a copy of the student, so their outputs must agree
    model.update_teacher(0.0)
    model.student.eval()
    crops = batch()["global_crops"]
    with torch.no_grad():
        teacher_out = model.teacher(crops)["dino_logits"]
        student_out = model.student(crops)["dino_logits"]
    assert torch.equal(teacher_out, student_out)
