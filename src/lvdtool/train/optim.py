"""AdamW over the student's parameter groups, with per-iteration lr / weight-decay updates."""

from __future__ import annotations

import torch
from torch import nn

from lvdtool.errors import TrainingError
from lvdtool.ssl.param_groups import build_param_groups
from lvdtool.ssl.schedules import ScheduleValues
from lvdtool.train.config import OptimSection


def build_optimizer(student: nn.Module, depth: int, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW (betas from the config) with DINOv2 param groups; lr and wd are set every step."""
    groups = build_param_groups(student.named_parameters(), depth, cfg.layerwise_decay, cfg.patch_embed_lr_mult,
                                decay_tokens=cfg.token_weight_decay)
    if not groups:
        raise TrainingError("the student has no trainable parameters")
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    # foreach stays on torch's default choice (multi-tensor kernels on CUDA, loops on CPU).
    return torch.optim.AdamW([g.as_optimizer_group() for g in groups], lr=0.0, betas=betas, weight_decay=0.0)


def apply_schedule(optimizer: torch.optim.Optimizer, values: ScheduleValues) -> None:
    """lr = (last-layer lr for prototype groups, else lr) x group multiplier; wd likewise."""
    for group in optimizer.param_groups:
        base_lr = values.last_layer_lr if group["is_last_layer"] else values.lr
        group["lr"] = base_lr * group["lr_multiplier"]
        group["weight_decay"] = values.weight_decay * group["wd_multiplier"]


def clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Total-norm clipping (DTensor gradients included); returns the norm before clipping."""
    grads_of = [p for p in parameters if p.grad is not None]
    if max_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(grads_of, max_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in grads_of])
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
