"""One optimisation step of DINOv2 pretraining (shared by the training loop and the benchmark)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from lvdtool.errors import TrainingError
from lvdtool.ssl.collapse_stats import STAT_NAMES
from lvdtool.ssl.distill_arch import DistillMetaArch
from lvdtool.ssl.meta_arch import LOSS_NAMES, SSLMetaArch
from lvdtool.ssl.schedules import ScheduleValues
from lvdtool.train.distributed import all_reduce_mean
from lvdtool.train.optim import apply_schedule, clip_gradients

BATCH_TENSORS = ("global_crops", "local_crops", "masks", "mask_indices", "masks_weight", "gram_crops")
FiniteCheck = Callable[[dict[str, float]], None]


def batch_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if k in BATCH_TENSORS else v) for k, v in batch.items()}


def train_step(
    meta: SSLMetaArch | DistillMetaArch,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    batch: dict[str, Any],
    values: ScheduleValues,
    clip_grad: float,
    check_finite: FiniteCheck | None = None,
) -> dict[str, float]:
    """Schedules -> forward (student and teacher) -> losses averaged over ranks -> finite check ->
    backward -> clip -> AdamW -> teacher EMA. Returns the logged values.

    `optimizer`: one, or one per network of `meta.trained_networks()` (distillation students);
    each network is clipped on its own, as if it trained alone; "grad_norm" is the largest norm.
    `check_finite` sees {"dino loss", "ibot loss", "koleo loss", "total loss"} before backward and
    {"gradient norm"} before the optimizer step, so a bad step raises with no weight changed.
    The batch's global crop size is reduced too: ranks that disagree on it stop with an error.
    """
    optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
    networks = meta.trained_networks()
    if len(optimizers) != len(networks):
        raise TrainingError(f"{len(optimizers)} optimizers for {len(networks)} trained networks")
    for opt in optimizers:
        apply_schedule(opt, values)
    gram = getattr(meta, "gram_teacher", None) is not None
    extra = {"gram_weight": values.gram_weight} if gram else {}
    losses = meta(batch, values.teacher_temp, dino_local_weight=values.dino_local_weight, **extra)
    names = LOSS_NAMES + STAT_NAMES
    names = names + tuple(sorted(k for k in losses if k not in names))
    size = float(batch["global_crops"].shape[-1])
    reduced = all_reduce_mean(torch.stack([*(losses[k].detach().float() for k in names),
                                           torch.tensor(size, device=losses["loss"].device)]))
    values_list = reduced.tolist()
    if values_list[-1] != size:
        raise TrainingError(f"the ranks trained on different crop sizes (this rank {size:g}, mean {values_list[-1]:g}): "
                            "the per-iteration resolution choice must be the same on every rank")
    logged = dict(zip(names, values_list))
    logged["global_size"] = size
    if check_finite:
        terms = ("dino", "ibot", "koleo", "gram") if gram else ("dino", "ibot", "koleo")
        check_finite({f"{k} loss": logged[k] for k in terms} | {"total loss": logged["loss"]})
    losses["loss"].backward()
    norms = [float(clip_gradients(list(net.parameters()), clip_grad)) for net in networks]
    logged["grad_norm"] = max(norms)
    if len(norms) > 1 and hasattr(meta, "names"):
        logged.update({f"{name}.grad_norm": norm for name, norm in zip(meta.names, norms)})
    if check_finite:
        check_finite({"gradient norm": logged["grad_norm"]})
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)
    meta.update_teacher(values.teacher_momentum)
    logged.update(lr=values.lr, last_layer_lr=values.last_layer_lr, wd=values.weight_decay,
                  momentum=values.teacher_momentum, teacher_temp=values.teacher_temp)
    if values.dino_local_weight != 1.0 or gram:
        logged["dino_local_weight"] = values.dino_local_weight
    if gram:
        logged["gram_weight"] = values.gram_weight
    return logged
