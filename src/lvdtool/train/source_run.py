"""Where a follow-up training stage (hires-adapt, distill) starts: another run's teacher.

`--from RUN` (or `--teacher RUN`) names a run directory (a complete `checkpoint` artifact of
pretrain, hires-adapt or distill). Its newest complete DCP checkpoint holds the whole training
state; only the teacher's entries are read (backbone and DINO/iBOT heads, and the centres when
asked), straight from the checkpoint's metadata into plain tensors, so the source's
architecture does not have to be rebuilt and its optimizer state is never loaded.

A backbone file (an official hub `.pth` or an lvd `backbone.pth`) is accepted too: it has no
heads, which then start fresh (the caveat is printed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from lvdtool.artifacts.manifest import InputRef, read_manifest
from lvdtool.errors import ArtifactError, CheckpointError, ConfigError
from lvdtool.models import backbone_fingerprint, extract_backbone_state, read_weights
from lvdtool.train.checkpoint import CHECKPOINTS_DIR, complete_checkpoints

HEADLESS_CAVEAT = (
    "a backbone file has no DINO/iBOT heads: they start from random init (fresh heads on a trained backbone "
    "can collapse early; start from a run directory to carry them over)"
)
# The sections of a source run's config that define its networks (what must match to load them).
NETWORK_SECTIONS = ("model", "dino", "ibot")


@dataclass
class SourceRun:
    """A run directory or a backbone file to start from."""

    path: Path
    config: dict[str, Any] | None  # the source run's resolved config; None for a backbone file
    checkpoint: Path | None  # the newest complete checkpoint; None for a backbone file
    ref: InputRef
    stage: str = "file"
    iteration: int = 0
    teacher_keys: list[str] = field(default_factory=list)

    @property
    def has_heads(self) -> bool:
        return self.checkpoint is not None

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"the backbone file {self.path} (heads fresh)"
        return f"the teacher of {self.stage} run {self.path} at iteration {self.iteration} ({self.checkpoint.name})"

    def network_config(self) -> dict[str, dict[str, Any]]:
        """model / dino / ibot sections of the source config (empty for a backbone file)."""
        if self.config is None:
            return {}
        return {k: dict(self.config.get(k) or {}) for k in NETWORK_SECTIONS}

    def teacher_state(self, with_centres: bool = False) -> dict[str, torch.Tensor]:
        """The teacher network's state dict (keys `backbone.*`, `dino_head.*`, `ibot_head.*`), and
        `dino_center.*` / `ibot_center.*` with `with_centres`. Collective under torch.distributed
        when a process group exists (every rank calls it and gets the full tensors)."""
        if self.checkpoint is None:
            state = extract_backbone_state(read_weights(self.path), str(self.path))
            return {f"backbone.{k}": v for k, v in state.items()}
        metadata = dcp.FileSystemReader(str(self.checkpoint)).read_metadata().state_dict_metadata
        wanted: dict[str, torch.Tensor] = {}
        prefixes = ["model.teacher."] + (["model.dino_center.", "model.ibot_center."] if with_centres else [])
        for key, meta in metadata.items():
            if isinstance(meta, TensorStorageMetadata) and any(key.startswith(p) for p in prefixes):
                wanted[key.removeprefix("model.")] = torch.empty(meta.size, dtype=meta.properties.dtype)
        if not any(k.startswith("teacher.backbone.") for k in wanted):
            raise CheckpointError(f"{self.checkpoint}: holds no teacher backbone (not an lvd training checkpoint)")
        try:
            dcp.load({"model": wanted}, checkpoint_id=str(self.checkpoint))
        except Exception as exc:  # DCP wraps per-rank failures
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{self.checkpoint}: cannot read the teacher ({first})") from None
        return {k.removeprefix("teacher."): v for k, v in wanted.items()}


def _newest_checkpoint(run: Path) -> tuple[int, Path]:
    found = complete_checkpoints(run)
    if not found:
        raise ArtifactError(f"{run}: has no complete checkpoint to start from")
    return found[-1]


def open_source(path: str | Path, role: str = "from") -> SourceRun:
    """A run directory (complete) or a backbone file; one-line errors for anything else."""
    path = Path(path)
    if path.is_file():
        ref = InputRef(path=str(path.resolve()), kind="file", fingerprint="sha256:" + backbone_fingerprint(path),
                       role=role)
        return SourceRun(path=path, config=None, checkpoint=None, ref=ref)
    if not path.is_dir():
        raise ConfigError(f"{role}={path}: no such run directory or backbone file")
    manifest = read_manifest(path)
    if manifest.kind != "checkpoint":
        raise ArtifactError(f"{path}: is a {manifest.kind} artifact, not a training run")
    if not manifest.complete:
        raise ArtifactError(f"{path}: the {manifest.stage} run is not complete (finish it first, or pass one of its "
                            f"checkpoints' backbone.pth)")
    students = manifest.extra.get("students") if manifest.stage == "distill" else None
    if students and not (path / CHECKPOINTS_DIR).is_dir():
        raise ArtifactError(f"{path}: is a distill run of {len(students)} students; start from one of them: "
                            + ", ".join(str(path / s) for s in students))
    iteration, checkpoint = _newest_checkpoint(path)
    ref = InputRef(path=str(path.resolve()), kind="checkpoint", fingerprint=manifest.fingerprint, role=role)
    return SourceRun(path=path, config=manifest.config, checkpoint=checkpoint, ref=ref, stage=manifest.stage,
                     iteration=iteration)
