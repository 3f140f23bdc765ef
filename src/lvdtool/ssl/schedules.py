"""Per-iteration schedules of DINOv2 pretraining (lr, weight decay, teacher momentum and
temperature, last-layer freeze). Pure and cheap: values are computed on demand, no arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lvdtool.errors import ConfigError, InputError
from lvdtool.ssl.heads import LAST_LAYER_NAME


class CosineSchedule:
    """Value at iteration `it` (0-based), in four phases:

    - `it < freeze_iters`: 0;
    - then `warmup_iters` iterations of linear warm-up from `start_warmup` (reached at the
      first warm-up iteration) towards `base` (reached at the first cosine iteration);
    - then a half cosine from `base` down (or up) to `final`, reached exactly at
      `total_iters - 1`;
    - `it >= total_iters`: `final`.

    With `warmup_iters == total_iters` and `base == final` this is "linear warm-up, then
    constant" (the teacher temperature). `cosine_iters` shortens the cosine phase: `final` is
    reached after that many cosine iterations and kept to the end (with `base=0` and no
    warm-up: DINOv3's cosine ramp-up of the lr, then constant).
    """

    def __init__(
        self,
        base: float,
        final: float,
        total_iters: int,
        warmup_iters: int = 0,
        start_warmup: float = 0.0,
        freeze_iters: int = 0,
        cosine_iters: int | None = None,
    ) -> None:
        if min(total_iters, warmup_iters, freeze_iters, cosine_iters or 0) < 0:
            raise ConfigError(
                f"CosineSchedule: negative length (total_iters={total_iters}, warmup_iters={warmup_iters}, "
                f"freeze_iters={freeze_iters})"
            )
        if freeze_iters + warmup_iters > total_iters:
            raise ConfigError(
                f"CosineSchedule: freeze_iters + warmup_iters = {freeze_iters + warmup_iters} "
                f"exceeds total_iters={total_iters}"
            )
        self.base = float(base)
        self.final = float(final)
        self.total_iters = int(total_iters)
        self.warmup_iters = int(warmup_iters)
        self.start_warmup = float(start_warmup)
        self.freeze_iters = int(freeze_iters)
        self.cosine_iters = None if cosine_iters is None else int(cosine_iters)

    def __len__(self) -> int:
        return self.total_iters

    def __getitem__(self, it: int) -> float:
        it = int(it)
        if it < 0:
            raise InputError(f"CosineSchedule: iteration must be >= 0, got {it}")
        if it >= self.total_iters:
            return self.final
        if it < self.freeze_iters:
            return 0.0
        warm_it = it - self.freeze_iters
        if warm_it < self.warmup_iters:
            return self.start_warmup + (self.base - self.start_warmup) * warm_it / self.warmup_iters
        cos_it = warm_it - self.warmup_iters
        cos_len = self.total_iters - self.freeze_iters - self.warmup_iters
        if self.cosine_iters is not None:
            if cos_it >= self.cosine_iters:
                return self.final
            cos_len = self.cosine_iters
        progress = cos_it / (cos_len - 1) if cos_len > 1 else 1.0
        return self.final + 0.5 * (self.base - self.final) * (1.0 + math.cos(math.pi * progress))

    def __repr__(self) -> str:
        return (
            f"CosineSchedule(base={self.base}, final={self.final}, total_iters={self.total_iters}, "
            f"warmup_iters={self.warmup_iters}, start_warmup={self.start_warmup}, freeze_iters={self.freeze_iters}, "
            f"cosine_iters={self.cosine_iters})"
        )


class CosineRamp:
    """`before` until iteration `start`, then a half-cosine from `before` to `after` over `length`
    iterations, then `after` (length 0: a step at `start`). DINOv3's Gram-loss weight (0 until
    1M iterations, then 0 -> 2 over 1000) and the local DINO weight that follows it (1 -> 0.5);
    `start = length = 0` is a constant `after`."""

    def __init__(self, before: float, after: float, start: int = 0, length: int = 0) -> None:
        if start < 0 or length < 0:
            raise ConfigError(f"CosineRamp: start={start} and length={length} must be >= 0")
        self.before, self.after = float(before), float(after)
        self.start, self.length = int(start), int(length)

    def __getitem__(self, it: int) -> float:
        it = int(it)
        if it < self.start:
            return self.before
        if it >= self.start + self.length:
            return self.after
        progress = (it - self.start) / self.length
        return self.after + 0.5 * (self.before - self.after) * (1.0 + math.cos(math.pi * progress))

    def __repr__(self) -> str:
        return f"CosineRamp(before={self.before}, after={self.after}, start={self.start}, length={self.length})"


def scaled_lr(base_lr: float, total_batch: int, reference_batch: int = 1024) -> float:
    """Square-root scaling rule: lr = base_lr * sqrt(total_batch / reference_batch)."""
    if total_batch < 1 or reference_batch < 1:
        raise ConfigError(
            f"scaled_lr: batch sizes must be >= 1 (total_batch={total_batch}, reference={reference_batch})"
        )
    return base_lr * math.sqrt(total_batch / reference_batch)


def lr_schedule(peak_lr: float, min_lr: float, total_iters: int, warmup_iters: int) -> CosineSchedule:
    """Linear warm-up from 0 to `peak_lr`, then cosine to `min_lr`."""
    return CosineSchedule(peak_lr, min_lr, total_iters, warmup_iters=warmup_iters, start_warmup=0.0)


def warmup_constant_lr(peak_lr: float, total_iters: int, warmup_iters: int) -> CosineSchedule:
    """DINOv3's "schedules v2" lr: linear warm-up from 0 (iteration 0) to `peak_lr` (reached at
    iteration `warmup_iters`, as `linspace(0, peak, warmup, endpoint=False)`), then constant."""
    return CosineSchedule(peak_lr, peak_lr, total_iters, warmup_iters=warmup_iters, start_warmup=0.0)


def weight_decay_schedule(start: float = 0.04, end: float = 0.4, total_iters: int = 1) -> CosineSchedule:
    """Cosine from `start` to `end` (0.04 -> 0.4 default, -> 0.2 for the L/14, g/14 recipes);
    `end == start` is a constant (DINOv3: 0.04)."""
    return CosineSchedule(start, end, total_iters)


def teacher_momentum_schedule(start: float = 0.992, end: float = 1.0, total_iters: int = 1) -> CosineSchedule:
    """EMA momentum of the teacher: cosine from `start` (0.994 for L/14, g/14) to 1; `end == start`
    is a constant (DINOv3: 0.994 in pretraining, 0.999 in the Gram and high-resolution stages)."""
    return CosineSchedule(start, end, total_iters)


def teacher_temp_schedule(start: float = 0.04, end: float = 0.07, warmup_iters: int = 0) -> CosineSchedule:
    """Teacher temperature: linear from `start` to `end` over `warmup_iters`, then constant."""
    return CosineSchedule(end, end, warmup_iters, warmup_iters=warmup_iters, start_warmup=start)


def is_last_layer_param(name: str) -> bool:
    """True for the heads' prototype-layer parameters (frozen during the first epoch)."""
    return LAST_LAYER_NAME in name.split(".")


def last_layer_lr_multiplier(it: int, freeze_iters: int) -> float:
    """Learning-rate multiplier of the prototype layer: 0 while frozen, then 1."""
    return 0.0 if it < freeze_iters else 1.0


@dataclass(frozen=True)
class ScheduleConfig:
    """Recipe values (defaults: the ViT-L/16 default config; L/14, g/14 use base_lr 2e-4,
    warmup_epochs 80, weight_decay_end 0.2, momentum_teacher 0.994, epochs 500)."""

    base_lr: float = 0.004
    min_lr: float = 1e-6
    epochs: int = 100
    warmup_epochs: int = 10
    epoch_length: int = 1250  # an "epoch" is a fixed number of iterations in DINOv2
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.992
    final_momentum_teacher: float = 1.0
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    freeze_last_layer_epochs: int = 1
    reference_batch: int = 1024


@dataclass(frozen=True)
class ScheduleValues:
    lr: float
    last_layer_lr: float
    weight_decay: float
    teacher_momentum: float
    teacher_temp: float
    dino_local_weight: float = 1.0
    gram_weight: float = 0.0


@dataclass(frozen=True)
class TrainingSchedules:
    lr: CosineSchedule
    weight_decay: CosineSchedule
    teacher_momentum: CosineSchedule
    teacher_temp: CosineSchedule
    last_layer_freeze_iters: int
    dino_local_weight: CosineRamp | None = None  # None: 1 (the DINOv2 average over all pairs)
    gram_weight: CosineRamp | None = None  # None: no Gram anchoring

    def at(self, it: int) -> ScheduleValues:
        lr = self.lr[it]
        return ScheduleValues(
            lr=lr,
            last_layer_lr=lr * last_layer_lr_multiplier(it, self.last_layer_freeze_iters),
            weight_decay=self.weight_decay[it],
            teacher_momentum=self.teacher_momentum[it],
            teacher_temp=self.teacher_temp[it],
            dino_local_weight=1.0 if self.dino_local_weight is None else self.dino_local_weight[it],
            gram_weight=0.0 if self.gram_weight is None else self.gram_weight[it],
        )


def build_schedules(config: ScheduleConfig, total_batch: int) -> TrainingSchedules:
    """All schedules of a run; the peak lr follows the square-root batch scaling rule."""
    total = config.epochs * config.epoch_length
    if total < 1:
        raise ConfigError(f"ScheduleConfig: epochs * epoch_length must be >= 1, got {total}")
    warmup = config.warmup_epochs * config.epoch_length
    if warmup > total:
        raise ConfigError(f"ScheduleConfig: warmup_epochs={config.warmup_epochs} exceeds epochs={config.epochs}")
    return TrainingSchedules(
        lr=lr_schedule(scaled_lr(config.base_lr, total_batch, config.reference_batch), config.min_lr, total, warmup),
        weight_decay=weight_decay_schedule(config.weight_decay, config.weight_decay_end, total),
        teacher_momentum=teacher_momentum_schedule(config.momentum_teacher, config.final_momentum_teacher, total),
        teacher_temp=teacher_temp_schedule(
            config.warmup_teacher_temp, config.teacher_temp, config.warmup_teacher_temp_epochs * config.epoch_length
        ),
        last_layer_freeze_iters=config.freeze_last_layer_epochs * config.epoch_length,
    )
