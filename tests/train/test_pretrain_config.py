"""Recipe presets per architecture, Hydra overrides, and the run plan."""
from __future__ import annotations

import pytest

from lvdtool.config import compose_config
from lvdtool.errors import ConfigError
from lvdtool.models import get_arch_config
from lvdtool.train.config import PretrainConfig
from lvdtool.train.plan import build_run_schedules, make_plan
from lvdtool.train.run_dir import config_differences

REQUIRED = ["data.images=/x/images", "out=/x/run"]


def compose(*overrides: str) -> tuple[PretrainConfig, dict]:
    return compose_config("pretrain", [*REQUIRED, *overrides], PretrainConfig)


@pytest.mark.parametrize("arch", ["vit_s14", "vit_b14"])
def test_default_recipe_for_small_and_base(arch):
    cfg, _ = compose(f"recipe={arch}")
    assert cfg.model.arch == arch
    assert (cfg.dino.prototypes, cfg.dino.bottleneck_dim, cfg.ibot.separate_head) == (65536, 256, False)
    assert cfg.dino.centering == "softmax"
    assert (cfg.optim.base_lr, cfg.optim.weight_decay, cfg.optim.weight_decay_end) == (0.004, 0.04, 0.4)
    assert (cfg.optim.layerwise_decay, cfg.teacher.momentum, cfg.optim.warmup_epochs) == (0.9, 0.992, 10)
    assert (cfg.optim.patch_embed_lr_mult, cfg.optim.clip_grad, cfg.optim.freeze_last_layer_epochs) == (0.2, 3.0, 1)
    assert (cfg.teacher.warmup_temp, cfg.teacher.temp, cfg.teacher.warmup_temp_epochs) == (0.04, 0.07, 30)
    assert (cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.crops.n_local_crops) == (224, 98, 8)
    assert (cfg.dino.koleo_weight, cfg.ibot.mask_prob, cfg.ibot.mask_ratio) == (0.1, 0.5, [0.1, 0.5])


def test_the_default_arch_is_vit_s14():
    cfg, _ = compose()
    assert cfg.model.arch == "vit_s14"


@pytest.mark.parametrize("arch, backbone, ffn", [("vit_l14", "vit_l14", "mlp"), ("vit_g14", "vit_g14", "swiglu"),
                                                  ("vit_l14_reg4", "vit_l14_reg4", "mlp")])
def test_large_and_giant_recipe(arch, backbone, ffn):
    cfg, _ = compose(f"recipe={arch}")
    assert cfg.model.arch == backbone
    assert get_arch_config(cfg.model.arch, **cfg.model.backbone_overrides()).ffn == ffn
    assert cfg.dino.centering == "sinkhorn_knopp" and cfg.ibot.separate_head
    assert (cfg.dino.prototypes, cfg.dino.bottleneck_dim) == (131072, 384)
    assert (cfg.ibot.prototypes, cfg.ibot.bottleneck_dim) == (131072, 256)
    assert (cfg.optim.base_lr, cfg.optim.weight_decay_end, cfg.optim.layerwise_decay) == (2e-4, 0.2, 1.0)
    assert (cfg.teacher.momentum, cfg.model.drop_path_rate, cfg.optim.warmup_epochs) == (0.994, 0.4, 80)
    meta = cfg.meta_arch_config()
    assert meta.ibot_head is not None and meta.ibot_head.prototypes == 131072


def test_overrides_land_typed_and_win_over_the_preset():
    cfg, resolved = compose("recipe=vit_l14", "optim.base_lr=0.001", "train.batch_size_per_gpu=16",
                            "crops.n_local_crops=4", "model.drop_path_rate=0.2", "dino.prototypes=256")
    assert cfg.optim.base_lr == 0.001 and cfg.train.batch_size_per_gpu == 16
    assert cfg.crops.n_local_crops == 4 and cfg.model.drop_path_rate == 0.2 and cfg.dino.prototypes == 256
    assert resolved["optim"]["base_lr"] == 0.001 and resolved["data"]["images"] == "/x/images"


def test_bad_keys_and_values_are_config_errors():
    with pytest.raises(ConfigError):
        compose("optim.no_such_key=1")
    with pytest.raises(ConfigError):
        compose("recipe=vit_nonexistent")
    cfg, _ = compose("parallel.precision=fp8")
    with pytest.raises(ConfigError, match="parallel.precision"):
        cfg.validate()


def test_plan_uses_dataset_epochs_or_iterations():
    cfg, _ = compose("recipe=vit_test", "train.batch_size_per_gpu=8", "train.epochs=3")
    plan = make_plan(cfg, n_images=1000, world_size=2)
    assert plan.epoch_length == 1000 // 16 and plan.total_iters == 3 * (1000 // 16)
    assert plan.peak_lr == pytest.approx(cfg.optim.base_lr * (16 / 1024) ** 0.5)
    cfg, _ = compose("recipe=vit_test", "train.iterations=17", "train.epoch_length=5", "optim.warmup_epochs=2")
    plan = make_plan(cfg, n_images=1000, world_size=1)
    assert (plan.total_iters, plan.epoch_length) == (17, 5)
    schedules = build_run_schedules(plan, cfg)
    assert schedules.lr[0] == 0.0 and schedules.lr[10] == pytest.approx(plan.peak_lr)
    with pytest.raises(ConfigError, match="training images"):
        make_plan(cfg, n_images=7, world_size=1)
    cfg, _ = compose("recipe=vit_test", "train.iterations=4", "train.epoch_length=5", "optim.warmup_epochs=1")
    with pytest.raises(ConfigError, match="optim.warmup_epochs"):
        build_run_schedules(make_plan(cfg, 100, 1), cfg)


def test_resume_compares_configs_except_speed_and_logging_keys():
    _, a = compose("recipe=vit_test")
    _, b = compose("recipe=vit_test", "data.workers=3", "train.log_every=1", "checkpoint.every=7")
    _, c = compose("recipe=vit_test", "optim.base_lr=0.01")
    assert config_differences(a, b) == []
    assert config_differences(a, c) == ["optim.base_lr: 0.004 -> 0.01"]
