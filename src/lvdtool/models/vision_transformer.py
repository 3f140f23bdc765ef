"""The DINOv2 Vision Transformer backbone.

Parameter names equal the official hub checkpoint keys, so `state_dict()` is already in the
official layout. All forwards share one packed path: tokens of every crop batch are concatenated
into (rows, D), token-wise layers run once over all rows, and attention runs per group of
equal-length sequences (see `token_layout`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from lvdtool.errors import ConfigError, InputError
from lvdtool.models.config import BackboneConfig
from lvdtool.models.layers import LAYER_NORM_EPS, Block, PatchEmbed, draw_drop_plan
from lvdtool.models.pos_embed import interpolate_pos_embed
from lvdtool.models.token_layout import TokenLayout

FeatureDict = dict[str, Any]


class VisionTransformer(nn.Module):
    """Token order [CLS, registers, patches]; registers get no position embedding."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.embed_dim = self.num_features = dim
        self.patch_size = config.patch_size
        self.num_register_tokens = config.num_register_tokens
        self.n_blocks = config.depth
        # Registration order reproduces the official state-dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid_size**2, dim))
        self.register_tokens: nn.Parameter | None = None
        if config.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self._drop_rates = config.drop_path_rates()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official init; the patch-embedding conv and norms keep PyTorch defaults, as there."""
        std = self.config.pos_embed_init_std
        bound = max(2.0, 2 * std)  # the official +-2 (no truncation at std 0.02); +-2 std above std 1
        nn.init.trunc_normal_(self.pos_embed, std=std, a=-bound, b=bound)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # ---- tokens -------------------------------------------------------------------------------

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embedding (1, 1 + grid_h*grid_w, D) for a patch grid of that shape."""
        return interpolate_pos_embed(
            self.pos_embed, grid_h, grid_w, self.config.interpolate_offset, self.config.interpolate_antialias
        )

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) -> tokens (B, 1 + registers + patches, D) before the blocks.

        `masks` (B, patches) bool replaces those patch embeddings by the mask token before the
        position embedding is added (iBOT).
        """
        batch, _, height, width = x.shape
        patches = self.patch_embed(x)
        if masks is not None:
            if masks.shape != patches.shape[:2]:
                raise InputError(f"masks shape {tuple(masks.shape)} != (batch, patches) {tuple(patches.shape[:2])}")
            masks = masks if masks.dtype == torch.bool else masks.bool()
            patches = torch.where(masks.unsqueeze(-1), self.mask_token.to(patches.dtype).unsqueeze(0), patches)
        pos = self.interpolate_pos_encoding(height // self.patch_size, width // self.patch_size)
        parts = [(self.cls_token + pos[:, :1]).expand(batch, -1, -1)]
        if self.register_tokens is not None:
            parts.append(self.register_tokens.expand(batch, -1, -1).to(parts[0].dtype))
        parts.append(patches + pos[:, 1:])
        return torch.cat(parts, dim=1)

    # ---- blocks ---------------------------------------------------------------------------------

    def _pack(self, xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, TokenLayout]:
        tokens = [self.prepare_tokens(x, m) for x, m in zip(xs, masks)]
        layout = TokenLayout(tuple((t.shape[0], t.shape[1]) for t in tokens))
        flat = [t.reshape(-1, self.embed_dim) for t in tokens]
        return (flat[0] if len(flat) == 1 else torch.cat(flat, dim=0)), layout

    def _run_blocks(self, rows: torch.Tensor, layout: TokenLayout) -> Iterator[torch.Tensor]:
        """Yields the packed tokens after each block; stochastic depth drawn once, up front."""
        plan = None
        if self.training:
            plan = draw_drop_plan(layout, self._drop_rates, rows.device)
        for index, block in enumerate(self.blocks):
            rows = block(rows, layout, plan[index] if plan else None)
            yield rows

    def _outputs(self, prenorm: torch.Tensor, normed: torch.Tensor, masks: torch.Tensor | None) -> FeatureDict:
        reg_end = 1 + self.num_register_tokens
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_norm_regtokens": normed[:, 1:reg_end],
            "x_norm_patchtokens": normed[:, reg_end:],
            "x_prenorm": prenorm,
            "masks": masks,
        }

    # ---- public forwards ----------------------------------------------------------------------

    def forward_features_list(
        self, xs: Sequence[torch.Tensor], masks_list: Sequence[torch.Tensor | None] | None = None
    ) -> list[FeatureDict]:
        """Multi-crop forward: one output dict per crop batch, equal to forwarding each alone.

        Crop batches may differ in resolution. Under the same seed, stochastic depth makes the
        same choices as forwarding the batches one after another (see `stochastic_depth`).
        """
        if not xs:
            raise InputError("forward_features_list got an empty list of crop batches")
        masks = list(masks_list) if masks_list is not None else [None] * len(xs)
        if len(masks) != len(xs):
            raise InputError(f"masks_list has {len(masks)} entries for {len(xs)} crop batches")
        rows, layout = self._pack(xs, masks)
        for rows in self._run_blocks(rows, layout):
            pass
        normed = self.norm(rows)
        return [
            self._outputs(prenorm, normed_part, m)
            for prenorm, normed_part, m in zip(layout.split(rows), layout.split(normed), masks)
        ]

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor], masks: Any = None) -> FeatureDict | list[FeatureDict]:
        """x: (B, C, H, W) -> feature dict; a list of crop batches -> list of dicts."""
        if isinstance(x, (list, tuple)):
            return self.forward_features_list(x, masks)
        return self.forward_features_list([x], [masks])[0]

    forward_features = forward  # official name, used by evaluation code

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Any, ...]:
        """Patch tokens of the last `n` blocks (int) or of the listed block indices, in block order.

        reshape: (B, D, H/p, W/p) maps instead of (B, patches, D); return_class_token: pairs
        (patch tokens, class token); norm: apply the final LayerNorm to each output.
        """
        depth = len(self.blocks)
        wanted = set(range(depth - n, depth)) if isinstance(n, int) else set(n)
        if not wanted or any(i < 0 or i >= depth for i in wanted):
            raise ConfigError(f"get_intermediate_layers n={n!r}: block indices must lie in [0, {depth})")
        rows, layout = self._pack([x], [None])
        taken = []
        for index, rows in enumerate(self._run_blocks(rows, layout)):
            if index in wanted:
                taken.append(rows)
            if len(taken) == len(wanted):
                break  # later blocks cannot change the outputs
        batch, _, height, width = x.shape
        reg_end = 1 + self.num_register_tokens
        outputs, class_tokens = [], []
        for out in taken:
            out = self.norm(out) if norm else out
            out = out.view(batch, -1, self.embed_dim)
            class_tokens.append(out[:, 0])
            patches = out[:, reg_end:]
            if reshape:
                grid = (height // self.patch_size, width // self.patch_size)
                patches = patches.reshape(batch, *grid, -1).permute(0, 3, 1, 2).contiguous()
            outputs.append(patches)
        if return_class_token:
            return tuple(zip(outputs, class_tokens))
        return tuple(outputs)
