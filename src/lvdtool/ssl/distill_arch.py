"""Distillation: a frozen teacher network and one or more students trained on its targets.

The DINOv2 distillation (paper: the frozen ViT-g teacher, the same DINO + iBOT + KoLeo losses,
no masking and no stochastic depth, iBOT on the global crops) as the official DINOv3 code runs
it: the teacher's DINO/iBOT heads give Sinkhorn-Knopp targets at the teacher temperature, every
student sees its global crops unmasked and predicts the teacher's iBOT targets at the patch
positions the collate sampled, and the model kept is an EMA of each student (a separate copy;
the teacher never changes). With several students the teacher runs once per batch and every
student is trained on the same batch and the same targets.

Single-device code: sharding and precision come from `lvdtool.train.parallelize`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from lvdtool.errors import ConfigError, InputError
from lvdtool.ssl.centering import sinkhorn_knopp
from lvdtool.ssl.collapse_stats import collapse_stats
from lvdtool.ssl.ema import ema_update_
from lvdtool.ssl.meta_arch import N_GLOBAL_CROPS, MetaArchConfig, SSLNetwork, _local, student_losses


class StudentPair(nn.Module):
    """One student and its EMA: what a student's checkpoint holds. The EMA sits under the name
    `teacher`, so the checkpoint layout and the exported backbone.pth (the EMA, as in DINOv3)
    are those of a pretraining run."""

    def __init__(self, student: SSLNetwork) -> None:
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)


class DistillMetaArch(nn.Module):
    """forward(batch, teacher_temp) -> losses: "loss" (sum over students, with graph), the
    per-student means of "dino", "ibot", "koleo", every student's own terms as "<name>.<term>",
    and the collapse statistics (teacher targets, first student's CLS)."""

    def __init__(self, teacher: SSLNetwork, students: dict[str, SSLNetwork], config: MetaArchConfig) -> None:
        super().__init__()
        if config.centering != "sinkhorn_knopp":
            raise ConfigError(f"distill: dino.centering={config.centering!r}; distillation targets are "
                              "Sinkhorn-Knopp (a frozen teacher has no running centre)")
        if not students:
            raise ConfigError("distill: no student")
        self.config = config
        self.teacher = teacher
        self.teacher.requires_grad_(False)
        for network in students.values():
            # students are never masked: the mask token gets no gradient, so it is frozen (else the
            # optimizer holds no state for it, and a resume's fresh optimizer state cannot be loaded)
            network.backbone.mask_token.requires_grad_(False)
        self.pairs = nn.ModuleDict({name: StudentPair(network) for name, network in students.items()})
        self.teacher_forwards = 0  # batches the teacher has run on (one per step, whatever the student count)

    @property
    def names(self) -> list[str]:
        return list(self.pairs.keys())

    def train(self, mode: bool = True) -> DistillMetaArch:
        super().train(mode)
        self.teacher.eval()  # frozen teacher: eval mode (no stochastic depth), no gradients
        for pair in self.pairs.values():
            pair.teacher.eval()
        return self

    def trained_networks(self) -> list[SSLNetwork]:
        return [pair.student for pair in self.pairs.values()]

    def forward(self, batch: dict[str, Any], teacher_temp: float, dino_local_weight: float = 1.0) -> dict[str, torch.Tensor]:
        global_crops = batch["global_crops"]
        if global_crops.shape[0] % N_GLOBAL_CROPS:
            raise InputError(f"global_crops has {global_crops.shape[0]} rows, not a multiple of {N_GLOBAL_CROPS}")
        n_images = global_crops.shape[0]
        mask_indices = batch["mask_indices"]
        iterations = self.config.sinkhorn_iterations
        with torch.no_grad():
            teacher = self.teacher(global_crops, mask_indices=mask_indices)
            self.teacher_forwards += 1
            teacher_dino = sinkhorn_knopp(teacher["dino_logits"], teacher_temp, iterations)
            teacher_ibot = sinkhorn_knopp(teacher["ibot_logits"], teacher_temp, iterations,
                                          n_valid_rows=int(batch["n_masked_patches"]))
        out: dict[str, torch.Tensor] = {}
        totals, terms = [], {"dino": [], "ibot": [], "koleo": []}
        first_cls = None
        for name, pair in self.pairs.items():
            # no student masking: the global crops go in whole, iBOT reads the sampled positions
            student = pair.student(global_crops, batch["local_crops"], None, mask_indices)
            total, dino, ibot, koleo = student_losses(self.config, student, teacher_dino, teacher_ibot, batch,
                                                      dino_local_weight)
            totals.append(total)
            for key, value in (("dino", dino), ("ibot", ibot), ("koleo", koleo)):
                terms[key].append(value.detach())
                out[f"{name}.{key}"] = value.detach()
            out[f"{name}.loss"] = total.detach()
            if first_cls is None:
                first_cls = student["cls_tokens"][:n_images]
        loss = totals[0]
        for total in totals[1:]:
            loss = loss + total  # independent students: the sum's gradient is each one's own
        out.update({key: torch.stack(values).mean() for key, values in terms.items()})
        out.update(collapse_stats(teacher["dino_logits"], teacher_dino, first_cls))
        out["loss"] = loss
        return out

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """Each student's EMA <- momentum * EMA + (1 - momentum) * student (the frozen teacher is untouched)."""
        for pair in self.pairs.values():
            ema_update_(_local(pair.teacher.parameters()), _local(pair.student.parameters()), momentum)
