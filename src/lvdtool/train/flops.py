"""Analytic model FLOPs of one pretraining step, per image, for MFU.

Counts matrix products only (2 FLOPs per multiply-add): patch embedding, qkv, attention scores
and weighted sum, projection, FFN, heads. Backward is counted as twice the forward. Nominal
model FLOPs: stochastic depth's skipped work is not subtracted, so MFU stays comparable across
drop-path rates (the same convention as the recipe's 2.06 TFLOP per image for ViT-L/14).
"""

from __future__ import annotations

from dataclasses import dataclass

from lvdtool.models.config import BackboneConfig
from lvdtool.ssl.meta_arch import HeadConfig

BACKWARD_FACTOR = 2.0


def vit_forward_flops(cfg: BackboneConfig, image_size: int) -> float:
    """Forward FLOPs of the backbone on one square image."""
    dim, hidden = cfg.embed_dim, cfg.hidden_dim
    patches = (image_size // cfg.patch_size) ** 2
    tokens = 1 + cfg.num_register_tokens + patches
    patch_embed = 2.0 * patches * cfg.in_chans * cfg.patch_size**2 * dim
    attention = 2.0 * tokens * dim * 3 * dim + 2 * (2.0 * tokens * tokens * dim) + 2.0 * tokens * dim * dim
    if cfg.ffn == "swiglu":
        ffn = 2.0 * tokens * dim * 2 * hidden + 2.0 * tokens * hidden * dim
    else:
        ffn = 2 * (2.0 * tokens * dim * hidden)
    return patch_embed + cfg.depth * (attention + ffn)


def head_forward_flops(in_dim: int, head: HeadConfig) -> float:
    """Forward FLOPs of a DINO/iBOT head on one token."""
    widths = [in_dim] + [head.hidden_dim] * (head.nlayers - 1) + [head.bottleneck_dim, head.prototypes]
    return sum(2.0 * a * b for a, b in zip(widths[:-1], widths[1:]))


@dataclass(frozen=True)
class StepShape:
    global_crops_size: int
    local_crops_size: int
    n_local_crops: int
    n_global_crops: int = 2
    mask_prob: float = 0.5
    mask_ratio: tuple[float, float] = (0.1, 0.5)

    def expected_masked_patches(self, patch_size: int) -> float:
        """Mean masked patches per image (over its global crops): the iBOT head's extra rows."""
        patches = (self.global_crops_size // patch_size) ** 2
        mean_ratio = (self.mask_ratio[0] + self.mask_ratio[1]) / 2
        return self.n_global_crops * self.mask_prob * mean_ratio * patches


def pretrain_flops_per_image(
    cfg: BackboneConfig, shape: StepShape, dino_head: HeadConfig, ibot_head: HeadConfig | None = None
) -> float:
    """Student forward+backward on every crop, teacher forward on the global crops, all heads."""
    ibot_head = ibot_head or dino_head
    crops = shape.n_global_crops * vit_forward_flops(cfg, shape.global_crops_size)
    crops_local = shape.n_local_crops * vit_forward_flops(cfg, shape.local_crops_size)
    masked = shape.expected_masked_patches(cfg.patch_size)
    dino = head_forward_flops(cfg.embed_dim, dino_head)
    ibot = head_forward_flops(cfg.embed_dim, ibot_head)
    student = (crops + crops_local) + (shape.n_global_crops + shape.n_local_crops) * dino + masked * ibot
    teacher = crops + shape.n_global_crops * dino + masked * ibot
    return (1.0 + BACKWARD_FACTOR) * student + teacher


# Dense bf16 matmul peaks (FLOP/s) for MFU; H100: measured on the project's machines (RECIPE).
KNOWN_PEAKS = {"H100": 799e12, "H200": 799e12, "A100": 312e12}


def device_peak_flops(device_name: str, override_tflops: float | None = None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    for key, peak in KNOWN_PEAKS.items():
        if key in device_name:
            return peak
    return None
