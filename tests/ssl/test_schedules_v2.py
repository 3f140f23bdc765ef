"""DINOv3 "schedules v2": linear warm-up then constant lr, constant weight decay and momentum, the
teacher temperature ramp then constant, the prototype freeze in iterations; one-line config errors."""
from __future__ import annotations

import pytest

from lvdtool.config import compose_config
from lvdtool.errors import ConfigError
from lvdtool.ssl.schedules import warmup_constant_lr
from lvdtool.train.config import PretrainConfig
from lvdtool.train.plan import build_run_schedules, make_plan

REQUIRED = ["data.images=/x/images", "out=/x/run"]


def compose(*overrides: str) -> PretrainConfig:
    cfg, _ = compose_config("pretrain", [*REQUIRED, *overrides], PretrainConfig)
    cfg.validate()
    return cfg


def test_warmup_constant_lr_is_the_official_linspace_then_the_peak():
    s = warmup_constant_lr(2.0, total_iters=100, warmup_iters=4)
    # linspace(0, 2, 4, endpoint=False) = 0, 0.5, 1, 1.5; then 2 to the end and beyond
    assert [s[i] for i in range(4)] == [0.0, 0.5, 1.0, 1.5]
    assert {s[i] for i in range(4, 100)} == {2.0}
    assert s[10_000] == 2.0
    assert warmup_constant_lr(2.0, 10, 0)[0] == 2.0


def test_the_dinov3_schedules_from_config_keys():
    # 7B pretrain in miniature: warm-up 10 of 100 its, temperature 0.04 -> 0.07 over 10, constant
    # wd 0.04 and momentum 0.994, prototypes frozen for 5 iterations
    cfg = compose("optim.lr_shape=warmup_constant", "train.iterations=100", "train.epoch_length=10",
                  "optim.warmup_epochs=1", "optim.weight_decay=0.04", "optim.weight_decay_end=0.04",
                  "teacher.momentum=0.994", "teacher.final_momentum=0.994", "teacher.warmup_temp_epochs=1",
                  "optim.freeze_last_layer_iterations=5", "train.batch_size_per_gpu=64")
    plan = make_plan(cfg, n_images=6400, world_size=1)
    sched = build_run_schedules(plan, cfg)
    peak = plan.peak_lr
    values = [sched.at(i) for i in range(100)]
    assert [v.lr for v in values[:10]] == pytest.approx([peak * i / 10 for i in range(10)])
    assert {v.lr for v in values[10:]} == {peak}
    assert {v.weight_decay for v in values} == {0.04}
    assert {v.teacher_momentum for v in values} == {0.994}
    assert values[0].teacher_temp == pytest.approx(0.04) and values[5].teacher_temp == pytest.approx(0.055)
    assert [v.teacher_temp for v in values[10:]] == pytest.approx([0.07] * 90)
    assert [v.last_layer_lr for v in values[:6]] == [0.0] * 5 + [values[5].lr]  # iterations, not epochs


def test_freeze_iterations_override_the_epochs_and_null_keeps_them():
    base = ("train.iterations=50", "train.epoch_length=10", "optim.freeze_last_layer_epochs=2",
            "optim.warmup_epochs=0", "teacher.warmup_temp_epochs=0")
    cfg = compose(*base)
    plan = make_plan(cfg, n_images=640, world_size=1)
    assert build_run_schedules(plan, cfg).last_layer_freeze_iters == 20
    cfg = compose(*base, "optim.freeze_last_layer_iterations=3")
    assert build_run_schedules(plan, cfg).last_layer_freeze_iters == 3


@pytest.mark.parametrize("override, key", [
    ("optim.lr_shape=constant", "optim.lr_shape"),
    ("optim.freeze_last_layer_iterations=-1", "optim.freeze_last_layer_iterations"),
    ("optim.freeze_last_layer_epochs=-1", "optim.freeze_last_layer_epochs"),
    ("optim.weight_decay_end=-0.1", "optim.weight_decay_end"),
    ("teacher.momentum=1.5", "teacher.momentum"),
    ("teacher.final_momentum=-0.1", "teacher.final_momentum"),
])
def test_bad_schedule_values_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        compose(override)
    message = str(info.value)
    assert key in message and "\n" not in message
