"""Optimizer parameter groups: weight decay, layer ids, lr multipliers, last-layer freeze."""
from __future__ import annotations

import pytest
import torch

from lvdtool.models import build_backbone
from lvdtool.ssl import SSLNetwork, build_param_groups, layer_id
from lvdtool.ssl.heads import DinoHead
from lvdtool.ssl.schedules import ScheduleValues, TrainingSchedules, lr_schedule, CosineSchedule
from lvdtool.train.config import OptimSection
from lvdtool.train.optim import apply_schedule, build_optimizer

DEPTH = 3


def network(separate_ibot: bool = False) -> SSLNetwork:
    torch.manual_seed(0)
    backbone = build_backbone("vit_test", depth=DEPTH, num_register_tokens=4, patch_size=8, img_size=32)
    ibot = DinoHead(32, 48, 32, 16) if separate_ibot else None
    return SSLNetwork(backbone, DinoHead(32, 64, 32, 16), ibot)


def rules_by_name(net: SSLNetwork, decay: float = 0.9, patch_mult: float = 0.2) -> dict:
    groups = build_param_groups(net.named_parameters(), DEPTH, decay, patch_mult)
    return {name: g.rule for g in groups for name in g.names}


TOKENS = ("backbone.cls_token", "backbone.pos_embed", "backbone.register_tokens", "backbone.mask_token")


@pytest.mark.parametrize("decay_tokens", [True, False])
def test_no_weight_decay_on_biases_norms_gammas(decay_tokens):
    net = network()
    groups = build_param_groups(net.named_parameters(), DEPTH, 0.9, 0.2, decay_tokens=decay_tokens)
    rules = {name: g.rule for g in groups for name in g.names}
    no_decay = {n for n, r in rules.items() if r.wd_multiplier == 0.0}
    for name in ("backbone.norm.weight", "backbone.norm.bias", "backbone.blocks.0.norm1.weight",
                 "backbone.blocks.1.ls1.gamma", "backbone.blocks.2.ls2.gamma", "backbone.blocks.0.attn.qkv.bias",
                 "backbone.patch_embed.proj.bias", "dino_head.mlp.0.bias"):
        assert name in no_decay, name
    for name in ("backbone.patch_embed.proj.weight", "backbone.blocks.0.attn.qkv.weight",
                 "backbone.blocks.2.mlp.fc2.weight", "dino_head.mlp.0.weight", "dino_head.last_layer.weight_v",
                 "dino_head.last_layer.weight_g"):
        assert rules[name].wd_multiplier == 1.0, name
    for name in TOKENS:  # the official rule decays tokens and the position embedding
        assert rules[name].wd_multiplier == (1.0 if decay_tokens else 0.0), name


def test_layer_ids_and_lr_multipliers():
    decay = 0.8
    rules = rules_by_name(network(separate_ibot=True), decay=decay, patch_mult=0.2)
    expected_ids = {"backbone.cls_token": 0, "backbone.pos_embed": 0, "backbone.register_tokens": 0,
                    "backbone.mask_token": 0, "backbone.patch_embed.proj.weight": 0,
                    "backbone.blocks.0.attn.qkv.weight": 1, "backbone.blocks.2.mlp.fc1.bias": 3,
                    "backbone.norm.weight": DEPTH + 1, "dino_head.mlp.0.weight": DEPTH + 1,
                    "ibot_head.last_layer.weight_v": DEPTH + 1}
    for name, lid in expected_ids.items():
        assert rules[name].layer_id == lid, name
        assert layer_id(name, DEPTH) == lid
    assert rules["backbone.cls_token"].lr_multiplier == pytest.approx(decay ** (DEPTH + 1))
    assert rules["backbone.patch_embed.proj.weight"].lr_multiplier == pytest.approx(0.2 * decay ** (DEPTH + 1))
    assert rules["backbone.blocks.1.attn.proj.weight"].lr_multiplier == pytest.approx(decay ** (DEPTH - 1))
    assert rules["dino_head.mlp.2.weight"].lr_multiplier == pytest.approx(1.0)
    assert {n for n, r in rules.items() if r.is_last_layer} == {
        f"{head}.last_layer.{p}" for head in ("dino_head", "ibot_head") for p in ("weight_v", "weight_g")}


def test_every_trainable_parameter_is_in_exactly_one_group():
    net = network(separate_ibot=True)
    net.backbone.mask_token.requires_grad_(False)
    groups = build_param_groups(net.named_parameters(), DEPTH)
    names = [n for g in groups for n in g.names]
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(trainable) and len(names) == len(set(names))
    assert "backbone.mask_token" not in names


def test_last_layer_is_frozen_for_the_first_epoch_then_trains():
    net = network()
    optimizer = build_optimizer(net, DEPTH, OptimSection())
    freeze = 3
    schedules = TrainingSchedules(
        lr=lr_schedule(1e-2, 1e-3, 6, warmup_iters=0),
        weight_decay=CosineSchedule(0.04, 0.4, 6),
        teacher_momentum=CosineSchedule(0.99, 1.0, 6),
        teacher_temp=CosineSchedule(0.07, 0.07, 6),
        last_layer_freeze_iters=freeze,
    )
    prototypes = net.dino_head.last_layer.weight_v
    images = torch.randn(4, 3, 32, 32)
    for it in range(6):
        values: ScheduleValues = schedules.at(it)
        apply_schedule(optimizer, values)
        last_lrs = [g["lr"] for g in optimizer.param_groups if g["is_last_layer"]]
        other_lrs = [g["lr"] for g in optimizer.param_groups if not g["is_last_layer"]]
        before, block_before = prototypes.detach().clone(), net.backbone.blocks[0].attn.qkv.weight.detach().clone()
        out = net(images)
        (out["dino_logits"].logsumexp(-1).mean() + out["cls_tokens"].pow(2).mean()).backward()
        assert prototypes.grad is not None and prototypes.grad.abs().sum() > 0
        optimizer.step()
        optimizer.zero_grad()
        assert all(lr > 0 for lr in other_lrs)
        assert not torch.equal(block_before, net.backbone.blocks[0].attn.qkv.weight)
        if it < freeze:
            assert last_lrs == [0.0]
            assert torch.equal(before, prototypes)  # lr exactly 0: decoupled decay cannot move it either
        else:
            assert last_lrs[0] == pytest.approx(values.lr) and last_lrs[0] > 0
            assert not torch.equal(before, prototypes)


def test_group_lr_and_weight_decay_follow_the_schedule_values():
    net = network()
    optimizer = build_optimizer(net, DEPTH, OptimSection(layerwise_decay=0.5))
    apply_schedule(optimizer, ScheduleValues(lr=0.1, last_layer_lr=0.05, weight_decay=0.3,
                                            teacher_momentum=0.99, teacher_temp=0.07))
    for group in optimizer.param_groups:
        base = 0.05 if group["is_last_layer"] else 0.1
        assert group["lr"] == pytest.approx(base * group["lr_multiplier"])
        assert group["weight_decay"] == pytest.approx(0.3 * group["wd_multiplier"])
    assert {g["lr_multiplier"] for g in optimizer.param_groups} >= {0.5 ** (DEPTH + 1), 1.0}
    assert optimizer.defaults["betas"] == (0.9, 0.999)
