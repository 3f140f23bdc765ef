"""Optimizer parameter groups of the student: layer-wise lr decay, no-decay set, prototype layers.

Rules (DINOv2 recipe), for parameter names relative to an `SSLNetwork`:
- layer id 0 for the patch embedding, CLS/register/mask tokens and position embedding, i + 1 for
  backbone block i, depth + 1 for everything else (final norm, heads);
  lr multiplier = layerwise_decay ** (depth + 1 - layer_id), times `patch_embed_lr_mult` for the
  patch embedding;
- no weight decay for biases and 1-D parameters (norm weights, LayerScale gammas); the CLS,
  register and mask tokens and the position embedding are decayed, as the official rule does
  (it exempts parameters by name: `.bias`, `norm`, `gamma`), unless `decay_tokens=False`; the
  prototype gain `weight_g` ([K, 1]) is decayed, as there;
- the heads' prototype layers (`last_layer`) are flagged: their lr follows the last-layer
  schedule (0 during the first epoch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from lvdtool.ssl.schedules import is_last_layer_param

BACKBONE_PREFIX = "backbone."
# DINOv3 backbones: `storage_tokens` instead of `register_tokens`, no pos_embed (RoPE has no parameters).
EMBEDDING_NAMES = ("cls_token", "pos_embed", "register_tokens", "storage_tokens", "mask_token", "patch_embed")
TOKEN_NAMES = ("cls_token", "pos_embed", "register_tokens", "storage_tokens", "mask_token")


def layer_id(name: str, depth: int) -> int:
    """Depth position of a parameter for layer-wise lr decay (see module docstring)."""
    if name.startswith(BACKBONE_PREFIX):
        rest = name[len(BACKBONE_PREFIX) :]
        first = rest.split(".")[0]
        if first in EMBEDDING_NAMES:
            return 0
        if first == "blocks":
            return int(rest.split(".")[1]) + 1
    return depth + 1


def is_patch_embed(name: str) -> bool:
    return name.startswith(BACKBONE_PREFIX + "patch_embed.")


def has_weight_decay(name: str, param: torch.Tensor, decay_tokens: bool = True) -> bool:
    leaf = name.split(".")[-1]
    if name.endswith(".bias") or param.ndim <= 1:
        return False
    return decay_tokens or leaf not in TOKEN_NAMES


@dataclass(frozen=True)
class ParamRule:
    layer_id: int
    lr_multiplier: float
    wd_multiplier: float
    is_last_layer: bool


def param_rule(
    name: str, param: torch.Tensor, depth: int, layerwise_decay: float, patch_embed_lr_mult: float,
    decay_tokens: bool = True,
) -> ParamRule:
    lid = layer_id(name, depth)
    lr_mult = layerwise_decay ** (depth + 1 - lid)
    if is_patch_embed(name):
        lr_mult *= patch_embed_lr_mult
    wd = 1.0 if has_weight_decay(name, param, decay_tokens) else 0.0
    return ParamRule(lid, lr_mult, wd, is_last_layer_param(name))


@dataclass
class ParamGroup:
    rule: ParamRule
    names: list[str] = field(default_factory=list)
    params: list[torch.Tensor] = field(default_factory=list)

    def as_optimizer_group(self) -> dict:
        # Extra keys travel with the group (and its checkpoint); `apply_schedule` reads them.
        return {
            "params": self.params,
            "lr_multiplier": self.rule.lr_multiplier,
            "wd_multiplier": self.rule.wd_multiplier,
            "is_last_layer": self.rule.is_last_layer,
            "layer_id": self.rule.layer_id,
        }


def build_param_groups(
    named_params: Iterable[tuple[str, torch.Tensor]],
    depth: int,
    layerwise_decay: float = 0.9,
    patch_embed_lr_mult: float = 0.2,
    decay_tokens: bool = True,
) -> list[ParamGroup]:
    """Trainable parameters grouped by identical rule, in first-seen order (deterministic)."""
    groups: dict[ParamRule, ParamGroup] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        rule = param_rule(name, param, depth, layerwise_decay, patch_embed_lr_mult, decay_tokens)
        group = groups.setdefault(rule, ParamGroup(rule))
        group.names.append(name)
        group.params.append(param)
    return list(groups.values())
