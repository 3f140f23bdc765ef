"""Building blocks of DINOv2 self-supervised pretraining: heads, losses (DINO, iBOT, KoLeo),
teacher centering, iBOT masking, schedules and the teacher EMA (pure functions and small
modules), plus the student/teacher meta-architecture (`meta_arch`) and the optimizer's
parameter-group rules (`param_groups`)."""

from lvdtool.ssl.centering import SoftmaxCenter, sinkhorn_knopp
from lvdtool.ssl.dino_loss import dino_loss, dino_pair_count
from lvdtool.ssl.ema import ema_update_
from lvdtool.ssl.heads import LAST_LAYER_NAME, DinoHead, NormalizedPrototypes
from lvdtool.ssl.ibot_loss import ibot_patch_loss
from lvdtool.ssl.koleo import koleo_loss, koleo_loss_per_view
from lvdtool.ssl.loss_weights import SSLLossWeights
from lvdtool.ssl.masking import (
    BatchMasks,
    BatchMaskSampler,
    BlockMaskGenerator,
    MaskBlock,
    batch_masks_from_tensor,
    sample_batch_masks,
)
from lvdtool.ssl.meta_arch import HeadConfig, MetaArchConfig, SSLMetaArch, SSLNetwork
from lvdtool.ssl.param_groups import ParamGroup, ParamRule, build_param_groups, layer_id, param_rule
from lvdtool.ssl.schedules import (
    CosineRamp,
    CosineSchedule,
    ScheduleConfig,
    ScheduleValues,
    TrainingSchedules,
    build_schedules,
    is_last_layer_param,
    last_layer_lr_multiplier,
    lr_schedule,
    scaled_lr,
    teacher_momentum_schedule,
    teacher_temp_schedule,
    warmup_constant_lr,
    weight_decay_schedule,
)

__all__ = [
    "HeadConfig",
    "MetaArchConfig",
    "ParamGroup",
    "ParamRule",
    "SSLMetaArch",
    "SSLNetwork",
    "build_param_groups",
    "layer_id",
    "param_rule",
    "LAST_LAYER_NAME",
    "BatchMaskSampler",
    "BatchMasks",
    "BlockMaskGenerator",
    "CosineRamp",
    "CosineSchedule",
    "DinoHead",
    "MaskBlock",
    "NormalizedPrototypes",
    "SSLLossWeights",
    "ScheduleConfig",
    "ScheduleValues",
    "SoftmaxCenter",
    "TrainingSchedules",
    "batch_masks_from_tensor",
    "build_schedules",
    "dino_loss",
    "dino_pair_count",
    "ema_update_",
    "ibot_patch_loss",
    "is_last_layer_param",
    "koleo_loss",
    "koleo_loss_per_view",
    "last_layer_lr_multiplier",
    "lr_schedule",
    "sample_batch_masks",
    "scaled_lr",
    "sinkhorn_knopp",
    "teacher_momentum_schedule",
    "teacher_temp_schedule",
    "warmup_constant_lr",
    "weight_decay_schedule",
]
