"""One optimisation step of DINOv2 pretraining (shared by the training loop and the benchmark)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lvdtool.ssl.collapse_stats import STAT_NAMES
from lvdtool.ssl.meta_arch import LOSS_NAMES, SSLMetaArch
from lvdtool.ssl.schedules import ScheduleValues
from lvdtool.train.distributed import all_reduce_mean
from lvdtool.train.optim import apply_schedule, clip_gradients

BATCH_TENSORS = ("global_crops", "local_crops", "masks", "mask_indices", "masks_weight")
FiniteCheck = Callable[[dict[str, float]], None]


def batch_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if k in BATCH_TENSORS else v) for k, v in batch.items()}


def train_step(
    meta: SSLMetaArch,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Any],
    values: ScheduleValues,
    clip_grad: float,
    check_finite: FiniteCheck | None = None,
) -> dict[str, float]:
    """Schedules -> forward (student and teacher) -> losses averaged over ranks -> finite check ->
    backward -> clip -> AdamW -> teacher EMA. Returns the logged values.

    `check_finite` sees {"dino loss", "ibot loss", "koleo loss", "total loss"} before backward and
    {"gradient norm"} before the optimizer step, so a bad step raises with no weight changed.
    """
    apply_schedule(optimizer, values)
    losses = meta(batch, values.teacher_temp)
    names = LOSS_NAMES + STAT_NAMES
    reduced = all_reduce_mean(torch.stack([losses[k].detach().float() for k in names]))
    logged = dict(zip(names, reduced.tolist()))
    if check_finite:
        check_finite({f"{k} loss": logged[k] for k in ("dino", "ibot", "koleo")} | {"total loss": logged["loss"]})
    losses["loss"].backward()
    logged["grad_norm"] = float(clip_gradients(list(meta.student.parameters()), clip_grad))
    if check_finite:
        check_finite({"gradient norm": logged["grad_norm"]})
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    meta.update_teacher(values.teacher_momentum)
    logged.update(lr=values.lr, last_layer_lr=values.last_layer_lr, wd=values.weight_decay,
                  momentum=values.teacher_momentum, teacher_temp=values.teacher_temp)
    return logged
