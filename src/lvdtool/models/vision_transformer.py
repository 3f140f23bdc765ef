"""The Vision Transformer backbone of the DINOv2 and DINOv3 families.

Parameter names equal the official hub checkpoint keys of the config's family, so `state_dict()`
is already in the official layout (DINOv2: `pos_embed`, `register_tokens`; DINOv3: no position
parameters but the `rope_embed.periods` buffer, `storage_tokens`, optional untied norms). All forwards share one packed path: tokens of every crop batch are concatenated
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
from lvdtool.models.layers import Block, PatchEmbed, draw_drop_plan
from lvdtool.models.layers.rope import Grid, RopeEmbedding, Table
from lvdtool.models.pos_embed import interpolate_pos_embed
from lvdtool.models.token_layout import TokenLayout

FeatureDict = dict[str, Any]


class VisionTransformer(nn.Module):
    """Token order [CLS, registers (DINOv3: storage tokens), patches]; only patches get positions."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.embed_dim = self.num_features = dim
        self.patch_size = config.patch_size
        self.num_register_tokens = config.num_register_tokens
        self.n_blocks = config.depth
        self.rope = config.rope
        # Registration order reproduces the official state-dict order of each family.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed: nn.Parameter | None = None
        if not self.rope:
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.grid_size**2, dim))
        extra = nn.Parameter(torch.zeros(1, config.num_register_tokens, dim)) if config.num_register_tokens else None
        self.token_name = "storage_tokens" if self.rope else "register_tokens"
        setattr(self, self.token_name, extra)
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, dim)
        self.rope_embed: RopeEmbedding | None = None
        if self.rope:
            self.rope_embed = RopeEmbedding(config.head_dim, config.rope_base, config.rope_normalize, config.rope_shift,
                                            config.rope_jitter, config.rope_rescale, config.rope_dtype)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.cls_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.untie_cls_norm else None
        self.local_cls_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.untie_local_cls_norm else None
        self._drop_rates = config.drop_path_rates()
        self.init_weights()

    @property
    def extra_tokens(self) -> nn.Parameter | None:
        """The register (DINOv2) or storage (DINOv3) tokens, or None."""
        return getattr(self, self.token_name)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official init; the patch-embedding conv and norms keep PyTorch defaults, as there."""
        if self.pos_embed is not None:
            std = self.config.pos_embed_init_std
            bound = max(2.0, 2 * std)  # the official +-2 (no truncation at std 0.02); +-2 std above std 1
            nn.init.trunc_normal_(self.pos_embed, std=std, a=-bound, b=bound)
        nn.init.normal_(self.cls_token, std=self.config.token_init_std)
        if self.extra_tokens is not None:
            nn.init.normal_(self.extra_tokens, std=self.config.token_init_std)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.rope_embed is not None:
            self.rope_embed.reset_periods()

    # ---- tokens -------------------------------------------------------------------------------

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embedding (1, 1 + grid_h*grid_w, D) for a patch grid of that shape."""
        if self.pos_embed is None:
            raise ConfigError(f"{self.config.arch}: a RoPE backbone has no position embedding to interpolate")
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
        extra = self.extra_tokens
        if self.pos_embed is None:  # RoPE: positions enter in attention
            parts = [self.cls_token.expand(batch, -1, -1).to(patches.dtype)]
            patch_part = patches
        else:
            pos = self.interpolate_pos_encoding(height // self.patch_size, width // self.patch_size)
            parts = [(self.cls_token + pos[:, :1]).expand(batch, -1, -1)]
            patch_part = patches + pos[:, 1:]
        if extra is not None:
            parts.append(extra.expand(batch, -1, -1).to(parts[0].dtype))
        parts.append(patch_part)
        return torch.cat(parts, dim=1)

    # ---- blocks ---------------------------------------------------------------------------------

    def _pack(self, xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, TokenLayout, list[Grid]]:
        tokens = [self.prepare_tokens(x, m) for x, m in zip(xs, masks)]
        layout = TokenLayout(tuple((t.shape[0], t.shape[1]) for t in tokens))
        grids = [(x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size) for x in xs]
        flat = [t.reshape(-1, self.embed_dim) for t in tokens]
        return (flat[0] if len(flat) == 1 else torch.cat(flat, dim=0)), layout, grids

    def _run_blocks(self, rows: torch.Tensor, layout: TokenLayout, grids: list[Grid]) -> Iterator[torch.Tensor]:
        """Yields the packed tokens after each block; stochastic depth and the RoPE coordinate
        augmentations are drawn once, up front (drop plan first)."""
        plan = None
        if self.training:
            plan = draw_drop_plan(layout, self._drop_rates, rows.device)
        tables: list[list[Table]] | None = None
        if self.rope_embed is not None:
            tables = self.rope_embed.tables(grids, len(self.blocks))
        for index, block in enumerate(self.blocks):
            rows = block(rows, layout, plan[index] if plan else None, tables[index] if tables else None)
            yield rows

    def _final_norm(self, rows: torch.Tensor, layout: TokenLayout) -> list[torch.Tensor]:
        """The final norm of each crop batch, (B_i, N_i, D). DINOv3's untied norms replace it on
        the CLS + storage tokens: `local_cls_norm` for the second crop batch (the local crops) in
        training, `cls_norm` otherwise when present."""
        normed = layout.split(self.norm(rows))
        if self.cls_norm is None and self.local_cls_norm is None:
            return normed
        prefix = 1 + self.num_register_tokens
        out = []
        for index, (part, pre) in enumerate(zip(normed, layout.split(rows))):
            norm = self.cls_norm
            if self.local_cls_norm is not None and self.training and index == 1:
                norm = self.local_cls_norm
            if norm is not None:
                part = torch.cat((norm(pre[:, :prefix]), part[:, prefix:]), dim=1)
            out.append(part)
        return out

    def _outputs(self, prenorm: torch.Tensor, normed: torch.Tensor, masks: torch.Tensor | None) -> FeatureDict:
        reg_end = 1 + self.num_register_tokens
        out = {
            "x_norm_clstoken": normed[:, 0],
            "x_norm_regtokens": normed[:, 1:reg_end],
            "x_norm_patchtokens": normed[:, reg_end:],
            "x_prenorm": prenorm,
            "masks": masks,
        }
        if self.rope:
            out["x_storage_tokens"] = out["x_norm_regtokens"]  # the official DINOv3 name
        return out

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
        rows, layout, grids = self._pack(xs, masks)
        for rows in self._run_blocks(rows, layout, grids):
            pass
        return [
            self._outputs(prenorm, normed_part, m)
            for prenorm, normed_part, m in zip(layout.split(rows), self._final_norm(rows, layout), masks)
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
        rows, layout, grids = self._pack([x], [None])
        taken = []
        for index, rows in enumerate(self._run_blocks(rows, layout, grids)):
            if index in wanted:
                taken.append(rows)
            if len(taken) == len(wanted):
                break  # later blocks cannot change the outputs
        batch, _, height, width = x.shape
        reg_end = 1 + self.num_register_tokens
        outputs, class_tokens = [], []
        for out in taken:
            if norm:
                out = self._final_norm(out, layout)[0]  # eval or not, one crop batch: never the local norm
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
