"""Finding a DINOv2 or DINOv3 backbone inside a weights dict, and reading its architecture off the shapes.

The family shows in the keys: DINOv2 files hold `pos_embed` (and `register_tokens`, fused SwiGLU
`w12`), DINOv3 files hold `rope_embed.periods` (and `storage_tokens`, SwiGLU `w1`/`w2`,
`qkv.bias_mask`, maybe `local_cls_norm` / `cls_norm`). A DINOv3 file also tells its head count:
there are head_dim / 4 RoPE periods.

Accepted layouts: the official hub files (plain keys), official training checkpoints
({"teacher": {"backbone.*", "dino_head.*"}} or {"model": {"student.backbone.*", ...}}, blocks
possibly chunked as `blocks.{chunk}.{i}.*` for FSDP), and wrappers that add "module." /
"_orig_mod." prefixes or nest under "model" / "teacher" / "state_dict".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from lvdtool.errors import CheckpointError
from lvdtool.models.config import BackboneConfig
from lvdtool.models.registry import KIND_ORDER, arch_entries

ANCHOR_KEY = "patch_embed.proj.weight"  # present in every backbone, whatever its size
WRAPPER_KEYS = ("teacher", "model", "state_dict")  # descended into, in this order of preference
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.(.+)$")
_PLAIN_BLOCK = re.compile(r"^blocks\.(\d+)\.")
HEAD_DIM_FALLBACK = 64  # DINOv2 widths all use 64-dim heads


def summarize_keys(keys: list[str], limit: int = 4) -> str:
    """'3 keys (a, b, c)' / '120 keys (a, b, c, d, ...)' for one-line error messages."""
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''} ({shown})"


def _descend(obj: Any) -> Any:
    while isinstance(obj, Mapping) and ANCHOR_KEY not in obj:
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return obj


def _choose_prefix(keys: list[str]) -> str | None:
    prefixes = [k[: -len(ANCHOR_KEY)] for k in keys if k.endswith(ANCHOR_KEY)]
    if not prefixes:
        return None
    # A training checkpoint holds student and teacher: the teacher is the model to use.
    teacher = [p for p in prefixes if "teacher" in p]
    return min(teacher or prefixes, key=len)


def extract_backbone_state(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors under official key names; CheckpointError if there is none."""
    obj = _descend(obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a dict of weights")
    keys = [str(k) for k in obj.keys()]
    prefix = _choose_prefix(keys)
    if prefix is None:
        raise CheckpointError(
            f"{source}: not a ViT backbone: no '{ANCHOR_KEY}' key; it has {summarize_keys(keys)}"
        )
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        key = str(key)
        if not key.startswith(prefix):
            continue  # heads and other modules next to the backbone
        name = key[len(prefix):]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: key '{key}' holds a {type(value).__name__}, not a tensor")
        chunked = _CHUNKED_BLOCK.match(name)
        if chunked:  # FSDP-chunked training layout: blocks.{chunk}.{i}.x -> blocks.{i}.x
            name = f"blocks.{chunked.group(1)}.{chunked.group(2)}"
        state[name] = value
    return state


def _need(state: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{source}: backbone key '{key}' is missing; cannot infer the architecture")
    return state[key]


def _num_heads(embed_dim: int) -> int:
    """Heads are not stored in the weights: take them from a registered arch of that width."""
    for entry in sorted(arch_entries(), key=lambda e: KIND_ORDER[e.kind]):
        known = entry.build_config()
        if known.embed_dim == embed_dim:
            return known.num_heads
    return max(embed_dim // HEAD_DIM_FALLBACK, 1)


def infer_backbone_config(state: Mapping[str, torch.Tensor], source: str = "<state dict>") -> BackboneConfig:
    """BackboneConfig of official-layout weights, from tensor shapes only (meta tensors work).

    Heads come from a registered arch of the same width, else 64-dim heads (pass num_heads to
    `load_backbone` for other widths); interpolation
    follows the hub convention (registers: offset 0 + antialias; none: offset 0.1).
    """
    if "pos_embed" not in state and ("rope_embed.periods" in state or "storage_tokens" in state):
        return _infer_dinov3(state, source)
    patch_weight = _need(state, ANCHOR_KEY, source)
    dim, in_chans, patch_size, _ = patch_weight.shape
    pos = _need(state, "pos_embed", source)
    grid = math.isqrt(pos.shape[1] - 1)
    if grid * grid != pos.shape[1] - 1:
        raise CheckpointError(f"{source}: 'pos_embed' has {pos.shape[1] - 1} patch positions, not a square grid")
    blocks = {int(m.group(1)) for k in state if (m := _PLAIN_BLOCK.match(k))}
    if not blocks:
        raise CheckpointError(f"{source}: no 'blocks.*' keys; cannot infer the depth")
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    swiglu = "blocks.0.mlp.w12.weight" in state
    ffn_in = _need(state, "blocks.0.mlp.w12.weight" if swiglu else "blocks.0.mlp.fc1.weight", source)
    hidden = ffn_in.shape[0] // 2 if swiglu else ffn_in.shape[0]
    config = BackboneConfig(
        embed_dim=dim,
        depth=max(blocks) + 1,
        num_heads=1,
        ffn="swiglu" if swiglu else "mlp",
        patch_size=patch_size,
        img_size=grid * patch_size,
        in_chans=in_chans,
        num_register_tokens=registers,
        interpolate_offset=0.0 if registers else 0.1,
        interpolate_antialias=bool(registers),
        layerscale_init=1e-5 if "blocks.0.ls1.gamma" in state else None,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        proj_bias="blocks.0.attn.proj.bias" in state,
        ffn_bias=("blocks.0.mlp.w12.bias" if swiglu else "blocks.0.mlp.fc1.bias") in state,
    )
    if config.hidden_dim != hidden:
        config = config.replace(ffn_hidden_dim=hidden)
    heads = _num_heads(dim)
    if dim % heads:
        raise CheckpointError(f"{source}: cannot guess num_heads for embed_dim {dim}; pass num_heads=")
    return config.replace(num_heads=heads)


def _depth(state: Mapping[str, torch.Tensor], source: str) -> int:
    blocks = {int(m.group(1)) for k in state if (m := _PLAIN_BLOCK.match(k))}
    if not blocks:
        raise CheckpointError(f"{source}: no 'blocks.*' keys; cannot infer the depth")
    return max(blocks) + 1


def rope_base_of(periods: torch.Tensor, source: str) -> float:
    """The base of periods p_k = base^(k / F), fitted in log space (periods stored in bf16, as a
    bf16 training run computes them, are off by up to 0.4%) and snapped to an integer within 1%.
    Refuses periods that follow another rule (min/max-period RoPE)."""
    count = periods.numel()
    if count < 2 or periods.is_meta:
        return 100.0  # one period (1.0) fits every base, shapes alone tell nothing: the official default
    logs = periods.detach().to(device="cpu", dtype=torch.float64).log()
    k = torch.arange(count, dtype=torch.float64)
    base = float(torch.exp(count * (k * logs).sum() / (k * k).sum()))
    if abs(base - round(base)) <= 0.01 * base:
        base = float(round(base))
    expected = base ** (k / count)
    if not torch.allclose(logs.exp(), expected, rtol=1e-2) or not bool(torch.isfinite(logs).all()):
        raise CheckpointError(f"{source}: 'rope_embed.periods' do not follow base^(k/{count}) "
                              "(min/max-period RoPE is not supported)")
    return base


def _infer_dinov3(state: Mapping[str, torch.Tensor], source: str) -> BackboneConfig:
    """The DINOv3 branch of `infer_backbone_config`: the released hub convention for what the
    weights cannot hold (LayerNorm eps 1e-5, coordinate rescale 2, separate normalisation)."""
    dim, in_chans, patch_size, _ = _need(state, ANCHOR_KEY, source).shape
    periods = _need(state, "rope_embed.periods", source)
    head_dim = 4 * periods.numel()
    if head_dim == 0 or dim % head_dim:
        raise CheckpointError(f"{source}: {periods.numel()} RoPE periods (head_dim {head_dim}) do not divide "
                              f"embed_dim {dim}")
    swiglu = "blocks.0.mlp.w1.weight" in state
    ffn_in = _need(state, "blocks.0.mlp.w1.weight" if swiglu else "blocks.0.mlp.fc1.weight", source)
    qkv_bias = "blocks.0.attn.qkv.bias" in state
    config = BackboneConfig(
        embed_dim=dim,
        depth=_depth(state, source),
        num_heads=dim // head_dim,
        ffn="swiglu" if swiglu else "mlp",
        patch_size=patch_size,
        img_size=224 // patch_size * patch_size or patch_size,
        in_chans=in_chans,
        num_register_tokens=state["storage_tokens"].shape[1] if "storage_tokens" in state else 0,
        layerscale_init=1e-5 if "blocks.0.ls1.gamma" in state else None,
        qkv_bias=qkv_bias,
        proj_bias="blocks.0.attn.proj.bias" in state,
        ffn_bias=("blocks.0.mlp.w1.bias" if swiglu else "blocks.0.mlp.fc1.bias") in state,
        family="dinov3",
        layer_norm_eps=1e-5,
        token_init_std=0.02,
        mask_k_bias="blocks.0.attn.qkv.bias_mask" in state or not qkv_bias,
        untie_local_cls_norm="local_cls_norm.weight" in state,
        untie_cls_norm="cls_norm.weight" in state,
        rope_base=rope_base_of(periods, source),
        rope_rescale=2.0,
    )
    hidden = ffn_in.shape[0]
    if config.hidden_dim != hidden:
        config = config.replace(ffn_hidden_dim=hidden)
    return config
