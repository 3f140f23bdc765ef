import math

import pytest

from lvdtool.errors import ConfigError, InputError
from lvdtool.ssl.schedules import (
    CosineSchedule,
    ScheduleConfig,
    build_schedules,
    is_last_layer_param,
    last_layer_lr_multiplier,
    lr_schedule,
    scaled_lr,
    teacher_momentum_schedule,
    teacher_temp_schedule,
    weight_decay_schedule,
)


def test_lr_warmup_then_cosine_boundaries():
    s = lr_schedule(peak_lr=1.0, min_lr=0.0, total_iters=110, warmup_iters=10)
    assert s[0] == 0.0
    assert s[5] == pytest.approx(0.5)
    assert s[9] == pytest.approx(0.9)
    assert s[10] == pytest.approx(1.0)  # warm-up end: the peak
    assert s[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 50 / 99)))
    assert s[109] == pytest.approx(0.0, abs=1e-12)  # last iteration: the final value
    assert s[500] == 0.0
    values = [s[i] for i in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone after warm-up


def test_freeze_then_warmup():
    s = CosineSchedule(base=2.0, final=1.0, total_iters=20, warmup_iters=4, start_warmup=0.5, freeze_iters=3)
    assert [s[i] for i in range(3)] == [0.0, 0.0, 0.0]
    assert s[3] == pytest.approx(0.5)
    assert s[5] == pytest.approx(0.5 + 1.5 * 2 / 4)
    assert s[7] == pytest.approx(2.0)
    assert s[19] == pytest.approx(1.0)
    assert len(s) == 20


def test_teacher_temperature_linear_then_constant():
    s = teacher_temp_schedule(0.04, 0.07, warmup_iters=30)
    assert s[0] == pytest.approx(0.04)
    assert s[15] == pytest.approx(0.055)
    assert s[30] == pytest.approx(0.07)
    assert s[10_000] == pytest.approx(0.07)
    assert teacher_temp_schedule(0.04, 0.07, warmup_iters=0)[0] == pytest.approx(0.07)


def test_teacher_momentum_and_weight_decay_cosines():
    m = teacher_momentum_schedule(0.992, 1.0, total_iters=101)
    assert m[0] == pytest.approx(0.992)
    assert m[50] == pytest.approx(0.996)  # half-way of a cosine is the midpoint
    assert m[100] == pytest.approx(1.0)
    wd = weight_decay_schedule(0.04, 0.4, total_iters=101)
    assert wd[0] == pytest.approx(0.04) and wd[50] == pytest.approx(0.22) and wd[100] == pytest.approx(0.4)


def test_sqrt_lr_scaling():
    assert scaled_lr(0.004, 1024) == pytest.approx(0.004)
    assert scaled_lr(0.004, 4096) == pytest.approx(0.008)
    assert scaled_lr(2e-4, 3072) == pytest.approx(2e-4 * math.sqrt(3))  # about 3.5e-4
    with pytest.raises(ConfigError):
        scaled_lr(0.004, 0)


def test_last_layer_freeze():
    assert is_last_layer_param("dino_head.last_layer.weight_v")
    assert is_last_layer_param("_orig_mod.ibot_head.last_layer.weight_v")
    assert not is_last_layer_param("dino_head.mlp.0.weight")
    assert not is_last_layer_param("backbone.blocks.0.last_layer_norm.weight")
    assert last_layer_lr_multiplier(0, 1250) == 0.0
    assert last_layer_lr_multiplier(1249, 1250) == 0.0
    assert last_layer_lr_multiplier(1250, 1250) == 1.0


def test_build_schedules_from_recipe():
    cfg = ScheduleConfig(epochs=4, warmup_epochs=1, epoch_length=10, warmup_teacher_temp_epochs=2,
                         freeze_last_layer_epochs=1)
    s = build_schedules(cfg, total_batch=4096)
    peak = 0.004 * 2.0
    first, warm_end, last = s.at(0), s.at(10), s.at(39)
    assert first.lr == 0.0 and first.last_layer_lr == 0.0
    assert first.teacher_momentum == pytest.approx(0.992)
    assert first.weight_decay == pytest.approx(0.04)
    assert first.teacher_temp == pytest.approx(0.04)
    assert warm_end.lr == pytest.approx(peak) and warm_end.last_layer_lr == pytest.approx(peak)
    assert s.at(9).last_layer_lr == 0.0 and s.at(9).lr > 0
    assert s.at(20).teacher_temp == pytest.approx(0.07)
    assert last.lr == pytest.approx(1e-6)
    assert last.teacher_momentum == pytest.approx(1.0)
    assert last.weight_decay == pytest.approx(0.4)


def test_invalid_schedules_raise():
    with pytest.raises(ConfigError):
        CosineSchedule(1.0, 0.0, total_iters=5, warmup_iters=6)
    with pytest.raises(ConfigError):
        build_schedules(ScheduleConfig(epochs=1, warmup_epochs=2), total_batch=1024)
    with pytest.raises(InputError):
        CosineSchedule(1.0, 0.0, total_iters=5)[-1]
