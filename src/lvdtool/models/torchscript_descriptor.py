"""A descriptor model shipped as a TorchScript file (how SSCD is published: sscd_disc_mixup.torchscript.pt).

The file maps a normalised float batch [B, 3, H, W] to [B, D]. Loading checks it is TorchScript and
probes one forward to learn (or check) D; every batch is checked for shape and finite values, so a
bad file or a broken run stops with one line naming the file (and the shard and key).
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lvdtool.errors import CheckpointError, ConfigError

MODEL_KINDS = ("vit", "torchscript")


@dataclass
class ModelConfig:
    kind: str = "vit"           # vit (lvd/official ViT weights: --weights/--arch) | torchscript (model.path)
    path: str | None = None     # the TorchScript file (kind=torchscript)
    dim: int | None = None      # expected output dimension, checked against the model (null: read off it)
    normalize: bool = True      # L2-normalise the outputs (SSCD's already are; cosine needs unit vectors)

    def check(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model.kind={self.kind!r}: expected one of {', '.join(MODEL_KINDS)}")
        if self.kind == "torchscript" and not self.path:
            raise ConfigError("model.kind=torchscript needs model.path=FILE (e.g. sscd_disc_mixup.torchscript.pt)")
        if self.kind == "vit" and self.path:
            raise ConfigError("model.path is read with model.kind=torchscript; a ViT backbone is given with --weights")
        if self.dim is not None and self.dim < 1:
            raise ConfigError(f"model.dim={self.dim}: must be positive")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_torchscript(path: str | os.PathLike[str], device: torch.device) -> torch.jit.ScriptModule:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"model.path {p}: no such file")
    try:
        module = torch.jit.load(str(p), map_location=device)
    except (RuntimeError, ValueError, zipfile.BadZipFile, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{p}: not a TorchScript file (torch.jit.load: {first})") from None
    return module.eval()


class TorchScriptDescriptor:
    """Callable: normalised float batch -> [B, D] float32 (L2-normalised when asked)."""

    def __init__(self, cfg: ModelConfig, device: torch.device, probe_side: int) -> None:
        cfg.check()
        self.path = Path(cfg.path or "")
        self.normalize = cfg.normalize
        self.module = load_torchscript(self.path, device)
        self.sha256 = file_sha256(self.path)
        self.params = sum(p.numel() for p in self.module.parameters())
        with torch.inference_mode():
            probe = self._raw(torch.zeros(2, 3, probe_side, probe_side, device=device))
        self.dim = int(probe.shape[1])
        if cfg.dim is not None and cfg.dim != self.dim:
            raise CheckpointError(f"{self.path}: outputs {self.dim}-d vectors but model.dim={cfg.dim}")

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        try:
            y = self.module(x)
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or ["RuntimeError"])[0][:160]
            raise CheckpointError(f"{self.path}: forward on a {tuple(x.shape)} batch failed ({first})") from None
        if not isinstance(y, torch.Tensor):
            raise CheckpointError(f"{self.path}: returns {type(y).__name__}, expected one [batch, dim] tensor")
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise CheckpointError(f"{self.path}: returns shape {tuple(y.shape)} for a batch of {x.shape[0]}, "
                                  f"expected [{x.shape[0]}, dim]")
        return y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self._raw(x).float()
        if y.shape[1] != self.dim:
            raise CheckpointError(f"{self.path}: returned {y.shape[1]}-d vectors, {self.dim}-d at start-up")
        return torch.nn.functional.normalize(y, dim=1) if self.normalize else y

    def identity(self, preprocess: dict[str, Any]) -> dict[str, Any]:
        """What the manifest records, so dedup can name the descriptor."""
        return {"kind": "torchscript", "path": str(self.path.resolve()), "file": self.path.name,
                "sha256": self.sha256, "weights_sha256": self.sha256, "dim": self.dim,
                "normalize": self.normalize, "params": self.params, "preprocess": preprocess,
                "descriptor": f"{self.path.name}@sha256:{self.sha256[:16]}"}
