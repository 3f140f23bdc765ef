"""DINOv2 Vision Transformers: registry, model, and official-checkpoint interop.

    from lvdtool.models import build_backbone, load_backbone, save_backbone
    model = build_backbone("vit_l14", drop_path_rate=0.4)
    out = model([global_crops, local_crops], [masks, None])   # multi-crop, one dict per batch
    save_backbone(model, "backbone.pth")                       # official hub key layout
"""

from lvdtool.models import archs as _archs  # noqa: F401  (registers the architectures)
from lvdtool.models.checkpoint import (
    backbone_fingerprint,
    describe_backbone,
    load_backbone,
    read_weights,
    save_backbone,
)
from lvdtool.models.checkpoint_layout import extract_backbone_state, infer_backbone_config
from lvdtool.models.config import BackboneConfig
from lvdtool.models.registry import build_backbone, get_arch_config, list_archs, match_arch, register_arch
from lvdtool.models.token_layout import TokenLayout
from lvdtool.models.vision_transformer import VisionTransformer

__all__ = [
    "BackboneConfig",
    "TokenLayout",
    "VisionTransformer",
    "backbone_fingerprint",
    "build_backbone",
    "describe_backbone",
    "extract_backbone_state",
    "get_arch_config",
    "infer_backbone_config",
    "list_archs",
    "load_backbone",
    "match_arch",
    "read_weights",
    "register_arch",
    "save_backbone",
]
