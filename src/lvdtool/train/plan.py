"""The run plan: length, epoch length and peak learning rate, fixed at the first launch.

A plan is derived from the config and the dataset size on the first launch and stored in every
checkpoint; a resumed run reuses it, so the per-iteration schedules stay the same even when the
run is resumed at another world size (where the global batch, and so the dataset-derived epoch
length, would differ).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lvdtool.errors import ConfigError
from lvdtool.ssl.schedules import (
    CosineRamp,
    CosineSchedule,
    TrainingSchedules,
    lr_schedule,
    scaled_lr,
    teacher_momentum_schedule,
    teacher_temp_schedule,
    warmup_constant_lr,
    weight_decay_schedule,
)
from lvdtool.train.config import PretrainConfig


@dataclass(frozen=True)
class TrainPlan:
    total_iters: int
    epoch_length: int  # iterations per schedule epoch
    global_batch: int  # at the first launch
    n_images: int
    peak_lr: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainPlan:
        return cls(int(d["total_iters"]), int(d["epoch_length"]), int(d["global_batch"]), int(d["n_images"]),
                   float(d["peak_lr"]))

    def iters(self, epochs: float) -> int:
        return int(round(epochs * self.epoch_length))


def make_plan(cfg: PretrainConfig, n_images: int, world_size: int) -> TrainPlan:
    global_batch = cfg.train.batch_size_per_gpu * world_size
    if n_images < global_batch:
        raise ConfigError(
            f"train.batch_size_per_gpu={cfg.train.batch_size_per_gpu} x {world_size} ranks = {global_batch} "
            f"exceeds the {n_images} training images"
        )
    check_koleo_group(cfg, world_size)
    epoch_length = cfg.train.epoch_length or n_images // global_batch
    total = cfg.train.iterations or int(round(cfg.train.epochs * epoch_length))
    if total < 1:
        raise ConfigError(f"train.epochs={cfg.train.epochs} gives no iteration (epoch length {epoch_length})")
    peak = scaled_lr(cfg.optim.base_lr, global_batch, cfg.optim.reference_batch)
    return TrainPlan(total, epoch_length, global_batch, n_images, peak)


def check_koleo_group(cfg: PretrainConfig, world_size: int) -> None:
    """The distributed KoLeo's groups must tile this world size's global batch (checked again on a
    resume, which may run at another world size)."""
    group, global_batch = cfg.dino.koleo_group_size, cfg.train.batch_size_per_gpu * world_size
    if group is not None and global_batch % group:
        raise ConfigError(f"dino.koleo_group_size={group} does not divide the global batch {global_batch} "
                          f"(train.batch_size_per_gpu={cfg.train.batch_size_per_gpu} x {world_size} ranks)")


def floored(iterations: int, floor: int, total: int) -> int:
    """A warm-up of `iterations`, at least `floor` but never more than half the run because of
    the floor (an explicit warm-up longer than the run stays an error)."""
    return max(iterations, min(floor, total // 2))


def build_run_schedules(plan: TrainPlan, cfg: PretrainConfig) -> TrainingSchedules:
    total = plan.total_iters
    warmup = floored(plan.iters(cfg.optim.warmup_epochs), cfg.optim.warmup_min_iterations, total)
    if warmup > total:
        raise ConfigError(
            f"optim.warmup_epochs={cfg.optim.warmup_epochs} is {warmup} iterations, longer than the run ({total})"
        )
    if cfg.optim.lr_shape == "ramp_constant":
        lr = CosineSchedule(0.0, plan.peak_lr, total, cosine_iters=warmup)  # DINOv3: cosine ramp 0 -> peak, then constant
    elif cfg.optim.lr_shape == "warmup_constant":
        lr = warmup_constant_lr(plan.peak_lr, total, warmup)  # DINOv3 pretraining: linear 0 -> peak, then constant
    else:
        lr = lr_schedule(plan.peak_lr, cfg.optim.min_lr, total, warmup)
    return TrainingSchedules(
        lr=lr,
        weight_decay=weight_decay_schedule(cfg.optim.weight_decay, cfg.optim.weight_decay_end, total),
        teacher_momentum=teacher_momentum_schedule(cfg.teacher.momentum, cfg.teacher.final_momentum, total),
        teacher_temp=teacher_temp_schedule(
            cfg.teacher.warmup_temp, cfg.teacher.temp,
            floored(plan.iters(cfg.teacher.warmup_temp_epochs), cfg.teacher.warmup_temp_min_iterations, total),
        ),
        last_layer_freeze_iters=freeze_iters(plan, cfg),
        dino_local_weight=local_weight_schedule(cfg),
        gram_weight=gram_weight_schedule(cfg),
    )


def gram_weight_schedule(cfg: PretrainConfig) -> CosineRamp | None:
    """0 until gram.ramp_start, a cosine ramp to gram.weight over gram.ramp_iterations, then constant."""
    gram = cfg.gram
    return CosineRamp(0.0, gram.weight, gram.ramp_start, gram.ramp_iterations) if gram.enabled else None


def local_weight_schedule(cfg: PretrainConfig) -> CosineRamp | None:
    """The DINO local-crop weight: constant dino.local_weight, or 1 -> dino.local_weight along the
    Gram weight's ramp (dino.local_weight_ramp); None when it is the constant 1."""
    weight = cfg.dino.local_weight
    if cfg.dino.local_weight_ramp:
        return CosineRamp(1.0, weight, cfg.gram.ramp_start, cfg.gram.ramp_iterations)
    return None if weight == 1.0 else CosineRamp(weight, weight)


def freeze_iters(plan: TrainPlan, cfg: PretrainConfig) -> int:
    """Iterations the prototype layers stay frozen: `optim.freeze_last_layer_iterations` when set,
    else the epochs converted with the plan's epoch length."""
    if cfg.optim.freeze_last_layer_iterations is not None:
        return int(cfg.optim.freeze_last_layer_iterations)
    return plan.iters(cfg.optim.freeze_last_layer_epochs)
