"""The DINOv3 recipe presets: the official 7B values on vit_l16_v3 (labelled lvd where they are lvd's), the
test-size preset (one real training step), and the Gram-stage phase preset."""
from __future__ import annotations

import torch

from lvdtool.config import compose_config
from lvdtool.ssl.schedules import ScheduleValues
from lvdtool.train.build import build_meta_arch, gram_sizes
from lvdtool.train.config import PretrainConfig
from lvdtool.train.optim import apply_schedule, build_optimizer
from lvdtool.train.plan import build_run_schedules, make_plan

REQUIRED = ["data.images=/x/images", "out=/x/run"]


def compose(stage: str, *overrides: str) -> PretrainConfig:
    cfg, _ = compose_config(stage, [*REQUIRED, *overrides], PretrainConfig)
    cfg.validate()
    return cfg


def test_the_dinov3_vitl16_preset_has_the_official_7b_values():
    cfg = compose("pretrain", "recipe=dinov3_vitl16")
    assert (cfg.model.arch, cfg.preset.name, cfg.preset.kind) == ("vit_l16_v3", "dinov3_vitl16", "lvd")
    assert "32 images per GPU is lvd's" in cfg.preset.note
    assert (cfg.dino.prototypes, cfg.dino.hidden_dim, cfg.dino.bottleneck_dim) == (262144, 8192, 512)
    assert (cfg.ibot.prototypes, cfg.ibot.hidden_dim, cfg.ibot.bottleneck_dim) == (98304, 4096, 384)
    assert cfg.dino.prototype_layer == cfg.ibot.prototype_layer == "plain" and cfg.ibot.separate_head
    assert cfg.dino.centering == "sinkhorn_knopp"
    assert (cfg.optim.betas, cfg.optim.clip_grad, cfg.optim.layerwise_decay) == ([0.9, 0.99], 30.0, 0.98)
    assert (cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.crops.flip_prob) == (256, 112, 0.0)
    # schedules v2 at the official global batch 4096: lr 0 -> 4.0e-4 over 100k, then constant
    plan = make_plan(cfg, n_images=10**7, world_size=128)
    assert plan.global_batch == 4096 and plan.total_iters == 1_000_000
    assert abs(plan.peak_lr - 4.0e-4) < 1e-12
    sched = build_run_schedules(plan, cfg)
    assert sched.lr.warmup_iters == 100_000 and sched.lr[99_999] < plan.peak_lr == sched.lr[100_000] == sched.lr[999_999]
    assert sched.weight_decay[0] == sched.weight_decay[999_999] == 0.04
    assert sched.teacher_momentum[0] == sched.teacher_momentum[999_999] == 0.994
    assert sched.teacher_temp.warmup_iters == 100_000 and sched.last_layer_freeze_iters == 5000
    assert not cfg.gram.enabled and cfg.dino.koleo_group_size is None


def test_the_dinov3_test_preset_trains_one_step():
    cfg = compose("pretrain", "recipe=dinov3_test")
    meta = build_meta_arch(cfg)
    assert meta.student.backbone.config.arch == "vit_test_v3"
    assert "dino_head.last_layer.weight" in meta.student.state_dict()
    optimizer = build_optimizer(meta.student, meta.student.backbone.config.depth, cfg.optim)
    assert optimizer.defaults["betas"] == (0.9, 0.99)
    torch.manual_seed(0)
    b, grid = 4, 4
    masks = torch.zeros(2 * b, grid * grid, dtype=torch.bool)
    masks[0, :5] = True
    indices = masks.flatten().nonzero().flatten()
    batch = {"global_crops": torch.randn(2 * b, 3, 32, 32), "local_crops": torch.randn(2 * b, 3, 16, 16),
             "masks": masks, "mask_indices": indices, "masks_weight": torch.full((5,), 0.2),
             "n_masked_patches": 5}
    meta.train()
    apply_schedule(optimizer, ScheduleValues(lr=1e-3, last_layer_lr=1e-3, weight_decay=0.04, teacher_momentum=0.994,
                                             teacher_temp=0.07))
    before = meta.student.dino_head.last_layer.weight.detach().clone()
    losses = meta(batch, teacher_temp=0.07)
    assert torch.isfinite(losses["loss"]) and "gram" not in losses
    losses["loss"].backward()
    optimizer.step()
    assert not torch.equal(before, meta.student.dino_head.last_layer.weight)


def test_the_gram_stage_preset_composes_for_hires_adapt():
    # (the stage carries the source run's model and local crops; here they are given)
    cfg = compose("hires_adapt", "from_run=/x/source", "hires_recipe=dinov3_gram", "model.arch=vit_l16_v3",
                  "crops.local_crops_size=112")
    gram = cfg.gram
    assert (gram.enabled, gram.weight, gram.ramp_start, gram.ramp_iterations) == (True, 2.0, 0, 1000)
    assert (gram.refresh_every, gram.first_refresh, gram.max_refreshes) == (10000, 10000, 3)
    assert gram_sizes(cfg, 16) == [512]
    assert cfg.dino.local_weight == 0.5 and cfg.dino.local_weight_ramp
    plan = make_plan(cfg, n_images=10**6, world_size=1)
    sched = build_run_schedules(plan, cfg)
    assert [sched.at(it).gram_weight for it in (0, 500, 1000)] == [0.0, 1.0, 2.0]
    assert [sched.at(it).dino_local_weight for it in (0, 500, 1000)] == [1.0, 0.75, 0.5]
    assert {sched.lr[it] for it in (0, 99_999)} == {plan.peak_lr}


def test_a_run_started_before_the_dinov3_keys_resumes_when_they_keep_their_defaults():
    from lvdtool.train.run_dir import config_differences

    _, new = compose_config("pretrain", [*REQUIRED, "recipe=vit_test"], PretrainConfig)
    old = {k: (dict(v) if isinstance(v, dict) else v) for k, v in new.items() if k != "gram"}
    old["dino"] = {k: v for k, v in new["dino"].items() if k not in ("local_weight", "koleo_group_size")}
    assert config_differences(old, new) == []
    _, gram_on = compose_config("pretrain", [*REQUIRED, "recipe=vit_test", "gram.enabled=true"], PretrainConfig)
    assert config_differences(old, gram_on) == ["gram.enabled: None -> True"]


def test_a_run_started_before_the_augment_backend_key_resumes_only_on_the_torch_backend():
    """Its crops were rendered by torch; "auto" is stored as what it resolved to (the loop does it)."""
    from lvdtool.train.run_dir import config_differences

    _, new = compose_config("pretrain", [*REQUIRED, "recipe=vit_test", "data.augment_backend=torch"], PretrainConfig)
    old = {**new, "data": {k: v for k, v in new["data"].items() if k != "augment_backend"}}
    assert config_differences(old, new) == []
    numba = {**new, "data": {**new["data"], "augment_backend": "numba"}}
    assert config_differences(old, numba) == ["data.augment_backend: 'torch' -> 'numba'"]
    assert config_differences(numba, new) == ["data.augment_backend: 'numba' -> 'torch'"]
