"""The DINOv2 student/teacher meta-architecture: networks, centering and the loss composition.

Single-device code: sharding, precision and compile are applied from outside (see
`lvdtool.train.parallelize`), which wraps each `SSLNetwork` as one FSDP root. The student sees
all crops (one packed multi-crop forward, iBOT masks on its global crops); the teacher, an EMA
of the student that never receives gradients, sees the global crops without masks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from lvdtool.errors import ConfigError, InputError
from lvdtool.ssl.centering import SoftmaxCenter, sinkhorn_knopp
from lvdtool.ssl.collapse_stats import collapse_stats
from lvdtool.ssl.dino_loss import dino_loss
from lvdtool.ssl.ema import ema_update_
from lvdtool.ssl.gram import GramTeacher, gram_loss
from lvdtool.ssl.heads import DinoHead
from lvdtool.ssl.ibot_loss import ibot_patch_loss
from lvdtool.ssl.koleo import koleo_loss_per_view
from lvdtool.ssl.loss_weights import SSLLossWeights

Centering = Literal["softmax", "sinkhorn_knopp"]
N_GLOBAL_CROPS = 2
LOSS_NAMES = ("loss", "dino", "ibot", "koleo")  # every run logs these; Gram anchoring adds "gram"


@dataclass(frozen=True)
class HeadConfig:
    prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    prototype_gain: str = "trainable"  # trainable (DINOv2) | fixed (DINO v1 norm_last_layer)
    prototype_init: str = "default"  # default (nn.Linear's, DINOv2) | trunc_normal (std 0.02)
    prototype_layer: str = "normalized"  # normalized (DINOv2 weight norm) | plain (DINOv3 nn.Linear)

    def build(self, in_dim: int) -> DinoHead:
        return DinoHead(in_dim, self.prototypes, self.hidden_dim, self.bottleneck_dim, self.nlayers,
                        prototype_gain=self.prototype_gain, prototype_init=self.prototype_init,
                        prototype_layer=self.prototype_layer)


@dataclass(frozen=True)
class MetaArchConfig:
    """dino_head serves both objectives unless `ibot_head` is given (untied heads)."""

    dino_head: HeadConfig = field(default_factory=HeadConfig)
    ibot_head: HeadConfig | None = None
    centering: Centering = "softmax"
    center_momentum: float = 0.9
    center_init: str = "zeros"  # zeros (official) | first_batch
    sinkhorn_iterations: int = 3
    student_temp: float = 0.1
    weights: SSLLossWeights = field(default_factory=SSLLossWeights)
    koleo_group_size: int | None = None  # distributed KoLeo over groups of the global batch (DINOv3); None: per rank

    def __post_init__(self) -> None:
        if self.centering not in ("softmax", "sinkhorn_knopp"):
            raise ConfigError(f"centering={self.centering!r}: expected 'softmax' or 'sinkhorn_knopp'")


class SSLNetwork(nn.Module):
    """Backbone + DINO head (+ separate iBOT head when untied): one network of the pair.

    forward(global_crops, local_crops, masks, mask_indices) -> dict with
      cls_tokens  [n_crops*B, D]  backbone CLS of every crop, global crops first
      dino_logits [n_crops*B, K]  DINO head on those CLS tokens
      ibot_logits [M, K']         iBOT head on the patch tokens at `mask_indices` (flat indices
                                  over (global crop, patch)); None without mask_indices
      patch_tokens [n_global*B, P, D]  backbone patch tokens of the global crops (Gram anchoring)
    """

    def __init__(self, backbone: nn.Module, dino_head: DinoHead, ibot_head: DinoHead | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        mask_indices: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        crops, crop_masks = [global_crops], [masks]
        if local_crops is not None and local_crops.numel():
            crops.append(local_crops)
            crop_masks.append(None)
        outputs = self.backbone(crops, crop_masks)
        cls_tokens = torch.cat([o["x_norm_clstoken"] for o in outputs])
        patches = outputs[0]["x_norm_patchtokens"]
        masked = None
        if mask_indices is not None:
            masked = patches.reshape(-1, patches.shape[-1]).index_select(0, mask_indices)
        if masked is None:
            return {"cls_tokens": cls_tokens, "dino_logits": self.dino_head(cls_tokens), "ibot_logits": None,
                    "patch_tokens": patches}
        if self.ibot_head is None:
            # Tied head: one call on CLS and patch tokens together (one weight gather under FSDP).
            logits = self.dino_head(torch.cat([cls_tokens, masked]))
            dino_logits, ibot_logits = logits.split([cls_tokens.shape[0], masked.shape[0]])
        else:
            dino_logits, ibot_logits = self.dino_head(cls_tokens), self.ibot_head(masked)
        return {"cls_tokens": cls_tokens, "dino_logits": dino_logits, "ibot_logits": ibot_logits,
                "patch_tokens": patches}


class SSLMetaArch(nn.Module):
    """Student, teacher and the teacher's centering state; `forward` returns the losses. With
    `gram=True` a third, frozen copy of the backbone (`gram_teacher`, see `lvdtool.ssl.gram`)
    gives the Gram-anchoring targets from `batch["gram_crops"]`."""

    def __init__(self, backbone: nn.Module, config: MetaArchConfig | None = None, gram: bool = False) -> None:
        super().__init__()
        self.config = config = config or MetaArchConfig()
        dim = int(backbone.embed_dim)
        dino_head = config.dino_head.build(dim)
        ibot_head = config.ibot_head.build(dim) if config.ibot_head is not None else None
        self.student = SSLNetwork(backbone, dino_head, ibot_head)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.dino_center: SoftmaxCenter | None = None
        self.ibot_center: SoftmaxCenter | None = None
        if config.centering == "softmax":
            ibot_dim = (config.ibot_head or config.dino_head).prototypes
            self.dino_center = SoftmaxCenter(config.dino_head.prototypes, config.center_momentum, config.center_init)
            self.ibot_center = SoftmaxCenter(ibot_dim, config.center_momentum, config.center_init)
        self.gram_teacher = GramTeacher(self.teacher.backbone) if gram else None

    def load_network_state(self, state: dict[str, torch.Tensor]) -> None:
        """Start from another run's teacher: `state` holds backbone.* and head keys (strictly
        matching this network), optionally dino_center.* / ibot_center.* (carried centres)."""
        network = {k: v for k, v in state.items() if not k.startswith(("dino_center.", "ibot_center."))}
        self.student.load_state_dict(network, strict=True)
        self.teacher.load_state_dict(network, strict=True)
        for name in ("dino_center", "ibot_center"):
            centre = getattr(self, name)
            own = {k.removeprefix(name + "."): v for k, v in state.items() if k.startswith(name + ".")}
            if centre is not None and own:
                centre.load_state_dict(own, strict=True)

    def load_backbone_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Continued pretraining: the same backbone weights in student and teacher (heads stay fresh)."""
        self.student.backbone.load_state_dict(state_dict, strict=True)
        self.teacher.backbone.load_state_dict(state_dict, strict=True)

    def train(self, mode: bool = True) -> SSLMetaArch:
        super().train(mode)
        self.teacher.eval()  # no stochastic depth in the teacher
        if self.gram_teacher is not None:
            self.gram_teacher.eval()
        return self

    @torch.no_grad()
    def _teacher_probs(
        self, logits: torch.Tensor, temp: float, center: SoftmaxCenter | None, n_valid: int | None = None
    ) -> torch.Tensor:
        if center is None:
            return sinkhorn_knopp(logits, temp, self.config.sinkhorn_iterations, n_valid_rows=n_valid)
        return center(logits, temp, n_valid)

    def forward(self, batch: dict[str, Any], teacher_temp: float, dino_local_weight: float = 1.0,
                gram_weight: float = 0.0) -> dict[str, torch.Tensor]:
        """Losses of one batch (see `collate_multicrop`): total "loss" (with graph), components and
        the collapse statistics of `lvdtool.ssl.collapse_stats` (detached). With a Gram teacher,
        "gram" is its loss (0 and not computed while `gram_weight` is 0), added x `gram_weight`."""
        global_crops = batch["global_crops"]
        if global_crops.shape[0] % N_GLOBAL_CROPS:
            raise InputError(f"global_crops has {global_crops.shape[0]} rows, not a multiple of {N_GLOBAL_CROPS}")
        n_images = global_crops.shape[0]  # number of global crops, the iBOT denominator
        mask_indices = batch["mask_indices"]
        n_masked = int(batch["n_masked_patches"])
        with torch.no_grad():
            teacher = self.teacher(global_crops, mask_indices=mask_indices)
            teacher_dino = self._teacher_probs(teacher["dino_logits"], teacher_temp, self.dino_center)
            teacher_ibot = self._teacher_probs(teacher["ibot_logits"], teacher_temp, self.ibot_center, n_masked)
        student = self.student(global_crops, batch["local_crops"], batch["masks"], mask_indices)
        total, dino, ibot, koleo = student_losses(self.config, student, teacher_dino, teacher_ibot, batch,
                                                  dino_local_weight)
        stats = collapse_stats(teacher["dino_logits"], teacher_dino, student["cls_tokens"][:n_images])
        out = {"loss": total, "dino": dino.detach(), "ibot": ibot.detach(), "koleo": koleo.detach(), **stats}
        if self.gram_teacher is not None:
            gram = self._gram_loss(student["patch_tokens"], batch, global_crops) if gram_weight > 0 else None
            if gram is not None:
                out["loss"] = total + gram_weight * gram
            out["gram"] = gram.detach() if gram is not None else torch.zeros((), device=total.device)
        return out

    def _gram_loss(self, student_patches: torch.Tensor, batch: dict[str, Any], global_crops: torch.Tensor) -> torch.Tensor:
        crops = batch.get("gram_crops")
        if crops is None or crops.shape[0] != global_crops.shape[0]:
            raise InputError("Gram anchoring needs batch['gram_crops'] (one per global crop): build the data with "
                             "the Gram crop size (gram.enabled)")
        patch = self.student.backbone.config.patch_size
        teacher_patches = self.gram_teacher(crops)
        student_grid = (global_crops.shape[-2] // patch, global_crops.shape[-1] // patch)
        teacher_grid = (crops.shape[-2] // patch, crops.shape[-1] // patch)
        return gram_loss(student_patches, teacher_patches, student_grid, teacher_grid)

    @torch.no_grad()
    def load_gram_teacher_from_ema(self, refresh: bool = True) -> None:
        """Gram teacher <- the EMA teacher's backbone; `refresh` counts it as a refresh (the first
        copy of `gram.load_ema_iteration` is not one, as in DINOv3)."""
        if self.gram_teacher is None:
            raise InputError("this meta-architecture has no Gram teacher")
        self.gram_teacher.copy_from(self.teacher.backbone)
        if refresh:
            self.gram_teacher.refreshes += 1

    def trained_networks(self) -> list[SSLNetwork]:
        """The networks that receive gradients (each is clipped on its own)."""
        return [self.student]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, on local shards when sharded."""
        ema_update_(_local(self.teacher.parameters()), _local(self.student.parameters()), momentum)


def student_losses(
    config: MetaArchConfig,
    student: dict[str, torch.Tensor | None],
    teacher_dino: torch.Tensor,
    teacher_ibot: torch.Tensor,
    batch: dict[str, Any],
    dino_local_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, dino, ibot, koleo) of one student's outputs against the teacher's targets: DINO on
    every crop's CLS (the local crops' pairs weighted by `dino_local_weight`, see `dino_loss`),
    iBOT on the sampled patch positions, KoLeo on the global crops' CLS."""
    n_images = batch["global_crops"].shape[0]  # number of global crops, the iBOT denominator
    weights, temp = config.weights, config.student_temp
    dino = dino_loss(student["dino_logits"], teacher_dino, n_global_crops=N_GLOBAL_CROPS, student_temp=temp,
                     local_weight=dino_local_weight)
    ibot = ibot_patch_loss(
        student["ibot_logits"], teacher_ibot, batch["masks_weight"], n_images,
        student_temp=temp, n_masked_patches=int(batch["n_masked_patches"]),
    )
    koleo = koleo_loss_per_view(student["cls_tokens"][:n_images], N_GLOBAL_CROPS, config.koleo_group_size)
    return weights.total(dino=dino, ibot=ibot, koleo=koleo), dino, ibot, koleo


def _local(params: Any) -> list[torch.Tensor]:
    # DTensor parameters (FSDP2) are updated through their local shard: same math, no dispatch.
    return [p.to_local() if hasattr(p, "to_local") else p for p in params]
