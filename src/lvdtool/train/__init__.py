"""DINOv2 pretraining: the loop, optimizer groups and schedules, FSDP2 / precision / compile
setup in one place, DCP checkpoints with exact resume, run plan, metrics and FLOPs.

    from lvdtool.train import PretrainConfig, run_pretraining
"""

from lvdtool.train.config import PretrainConfig
from lvdtool.train.flops import StepShape, pretrain_flops_per_image, vit_forward_flops
from lvdtool.train.loop import Pretrainer, RunSummary, run_pretraining
from lvdtool.train.plan import TrainPlan, build_run_schedules, make_plan

__all__ = [
    "PretrainConfig",
    "Pretrainer",
    "RunSummary",
    "StepShape",
    "TrainPlan",
    "build_run_schedules",
    "make_plan",
    "pretrain_flops_per_image",
    "run_pretraining",
    "vit_forward_flops",
]
