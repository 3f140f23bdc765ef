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
    # a value outside its choices is refused when the config is composed, before anything is created
    with pytest.raises(ConfigError, match="parallel.precision='fp8': expected one of auto, bf16, fp32"):
        compose("parallel.precision=fp8")


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


def test_small_data_preset_and_its_warm_up_floors():
    cfg, _ = compose("recipe=small_data")
    assert (cfg.preset.name, cfg.preset.kind) == ("small_data", "lvd")
    backbone = get_arch_config(cfg.model.arch, **cfg.model.backbone_overrides())
    assert (backbone.embed_dim, backbone.patch_size, backbone.img_size, backbone.pos_embed_init_std) == (64, 8, 32, 1.0)
    assert (cfg.dino.prototypes, cfg.dino.center_init, cfg.teacher.momentum, cfg.teacher.final_momentum) == (
        1024, "first_batch", 0.98, 0.995)
    # floors in iterations, whatever the dataset size ...
    for n_images in (1000, 100_000):
        s = build_run_schedules(make_plan(compose("recipe=small_data", "train.iterations=3500")[0], n_images, 1), cfg)
        assert (s.lr.warmup_iters, s.teacher_temp.warmup_iters) == (150, 400)
    # ... capped at half of a short run, and an epoch-valued warm-up that is longer still wins
    short, _ = compose("recipe=small_data", "train.iterations=200")
    s = build_run_schedules(make_plan(short, 1000, 1), short)
    assert (s.lr.warmup_iters, s.teacher_temp.warmup_iters) == (100, 100)
    longer, _ = compose("recipe=small_data", "train.iterations=3500", "optim.warmup_epochs=20")
    assert build_run_schedules(make_plan(longer, 1000, 1), longer).lr.warmup_iters == 20 * (1000 // 64)
    with pytest.raises(ConfigError, match="optim.warmup_min_iterations"):
        compose("recipe=small_data", "optim.warmup_min_iterations=-1")[0].validate()


@pytest.mark.parametrize("arch", ["vit_s14", "vit_l14", "vit_g14_reg4"])
def test_paper_presets_say_so_and_keep_the_official_init_and_no_floors(arch):
    cfg, _ = compose(f"recipe={arch}")
    assert (cfg.preset.name, cfg.preset.kind) == (arch, "paper")
    assert (cfg.optim.warmup_min_iterations, cfg.teacher.warmup_temp_min_iterations, cfg.dino.center_init) == (0, 0, "zeros")
    assert get_arch_config(cfg.model.arch, **cfg.model.backbone_overrides()).pos_embed_init_std == 0.02


def test_position_embedding_init_std_is_what_the_config_says():
    import torch

    from lvdtool.models import build_backbone

    torch.manual_seed(0)
    # a truncated normal: at 0.02 the official +-2 bounds cut nothing; at 1.0 the bounds are +-2 std,
    # which leaves 0.88 std
    for std, expected in ((0.02, 0.02), (1.0, 0.88)):
        pos = build_backbone("vit_test", embed_dim=64, num_heads=4, pos_embed_init_std=std).pos_embed
        assert abs(pos.std().item() - expected) < 0.05 * expected
        assert pos.abs().max().item() <= max(2.0, 2 * std)
    with pytest.raises(ConfigError, match="pos_embed_init_std"):
        build_backbone("vit_test", pos_embed_init_std=0.0)
