"""Backbone weights in the official DINOv2 / DINOv3 layouts: load (.pth/.pt/.safetensors), save, describe."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lvdtool.artifacts.atomic import atomic_path, atomic_write_json

from lvdtool.errors import CheckpointError
from lvdtool.models.config import BackboneConfig
from lvdtool.models.checkpoint_layout import extract_backbone_state, infer_backbone_config, summarize_keys
from lvdtool.models.registry import get_arch_config, match_arch
from lvdtool.models.vision_transformer import VisionTransformer

SAFETENSORS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
# What the official key layout cannot tell: the head count and the position interpolation rule
# (DINOv2), the LayerNorm eps and the RoPE coordinate rules (DINOv3).
SIDECAR_FIELDS = ("num_heads", "interpolate_offset", "interpolate_antialias", "layer_norm_eps", "rope_normalize",
                  "rope_shift", "rope_jitter", "rope_rescale", "rope_dtype")
StateDict = dict[str, torch.Tensor]


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """`backbone.pth` -> `backbone.pth.json`: the config fields the weights cannot carry."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{side}: unreadable backbone sidecar ({_one_line(error)})") from error
    return {k: data[k] for k in SIDECAR_FIELDS if k in data}


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def read_weights(path: str | os.PathLike[str]) -> Any:
    """The object stored in a weights file, on CPU, without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a pickle, disallowed globals, bad header...
        raise CheckpointError(f"{path}: cannot read weights ({_one_line(error)})") from error


def _check_matches(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, arch: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: does not match backbone {arch}: missing {summarize_keys(missing)}, "
            f"unexpected {summarize_keys(unexpected)}"
        )
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{source}: shapes do not match backbone {arch}: {len(wrong)} keys ({'; '.join(wrong[:3])})")


def load_backbone(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any], arch: str | None = None, **overrides: Any
) -> VisionTransformer:
    """A `VisionTransformer` with the given weights loaded strictly.

    Accepts official hub files, lvd `backbone.pth`/`.safetensors`, official training checkpoints
    and common wrappers (see `checkpoint_layout`). Without `arch` the architecture is read off
    the weights, and off the sidecar `<file>.json` that `save_backbone` writes next to lvd files
    (head count, interpolation rule); `overrides` change config fields (drop_path_rate,
    num_heads for unusual widths without a sidecar) and win over the sidecar.
    """
    if isinstance(path_or_state_dict, Mapping):
        source, raw = "<state dict>", path_or_state_dict
    else:
        source, raw = str(path_or_state_dict), read_weights(path_or_state_dict)
        if arch is None:
            overrides = {**read_sidecar(path_or_state_dict), **overrides}
    state = extract_backbone_state(raw, source)
    if arch is not None:
        config = get_arch_config(arch, **overrides)
    else:
        inferred = infer_backbone_config(state, source)
        config = inferred.replace(arch=match_arch(inferred) or "custom").replace(**overrides)
    with torch.device("meta"):  # skip the random init: every parameter is overwritten below
        model = VisionTransformer(config)
    _check_matches(model, state, source, config.arch)
    model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    return model


def _atomic_write(state: StateDict, path: Path) -> None:
    # readers see the old file or the complete new one, never half
    with atomic_path(path) as temp:
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save_file

            save_file(state, str(temp))
        else:
            torch.save(state, temp)


def save_backbone(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    config: BackboneConfig | None = None,
) -> Path:
    """Write the backbone's weights in the official key layout, float32, atomically.

    `.safetensors` suffix: safetensors; anything else: `torch.save`. A wrapped module or a full
    (gathered) state dict with "module."-style prefixes is accepted; heads are left out. With a
    config (given, or the module's own) the sidecar `<file>.json` records the head count and the
    interpolation rule, which the official layout cannot hold; it is written after the weights, so
    a failed weights write leaves the previous pair intact.
    """
    path = Path(path)
    raw = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    config = config or getattr(model_or_state_dict, "config", None)
    state = extract_backbone_state(raw, str(path))
    infer_backbone_config(state, str(path))  # refuses anything that is not a complete backbone
    state = {k: v.detach().to(device="cpu", dtype=torch.float32).contiguous() for k, v in state.items()}
    _atomic_write(state, path)
    if isinstance(config, BackboneConfig):
        atomic_write_json(sidecar_path(path), {k: getattr(config, k) for k in SIDECAR_FIELDS})
    return path


def backbone_fingerprint(path: str | os.PathLike[str], length: int = 64) -> str:
    """The sha256 hex digest of the file's bytes (what `sha256sum` prints), for manifests."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def describe_backbone(model: VisionTransformer) -> dict[str, Any]:
    """JSON-ready summary for manifests: matching registered arch (or None), config, size."""
    config = model.config
    return {
        "arch": match_arch(config),
        "built_from": config.arch,
        "params": sum(p.numel() for p in model.parameters()),
        "embed_dim": config.embed_dim,
        "patch_size": config.patch_size,
        "num_register_tokens": config.num_register_tokens,
        "config": config.to_dict(),
    }
