"""Building blocks of the DINOv2 Vision Transformer, one per file."""

from lvdtool.models.layers.attention import Attention
from lvdtool.models.layers.attention_backend import attend, xformers_runs_on
from lvdtool.models.layers.block import LAYER_NORM_EPS, Block
from lvdtool.models.layers.layer_scale import LayerScale
from lvdtool.models.layers.mlp import Mlp
from lvdtool.models.layers.patch_embed import PatchEmbed
from lvdtool.models.layers.stochastic_depth import BlockDrop, add_residual, draw_drop_plan
from lvdtool.models.layers.swiglu import SwiGLU

__all__ = [
    "LAYER_NORM_EPS",
    "Attention",
    "Block",
    "BlockDrop",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "SwiGLU",
    "add_residual",
    "attend",
    "draw_drop_plan",
    "xformers_runs_on",
]
