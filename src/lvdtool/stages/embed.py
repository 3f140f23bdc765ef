"""`lvd embed`: images artifact -> embeddings artifact (one output shard per image shard)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import MISSING
from torch.utils.data import DataLoader

from lvdtool.artifacts.embeddings import embeddings_table
from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.artifacts.manifest import InputRef, input_ref
from lvdtool.artifacts.ranks import rank_info
from lvdtool.artifacts.selection import Selection
from lvdtool.artifacts.sharded_output import ShardedOutput
from lvdtool.artifacts.tables import write_parquet
from lvdtool.artifacts.verify import verify_input
from lvdtool.config import compose_config
from lvdtool.console import console, print_summary, progress
from lvdtool.data.eval_transform import EvalTransform, normalize_batch
from lvdtool.data.preprocess import PreprocessConfig, ResizeCropTransform, normalize_with
from lvdtool.data.shard_images import ShardBatches
from lvdtool.errors import CheckpointError, ConfigError
from lvdtool.models import backbone_fingerprint, build_backbone, describe_backbone, load_backbone
from lvdtool.models.torchscript_descriptor import ModelConfig, TorchScriptDescriptor

TOKENS = ("cls", "avgpool", "cls+avgpool")


@dataclass
class EmbedConfig:
    images: str = MISSING
    out: str = MISSING
    selection: str | None = None
    weights: str | None = None
    arch: str | None = None
    random_init: bool = False
    resolution: int = 224
    resize: int | None = None
    token: str = "cls"
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    verify: str = "size"  # inputs checked before reading: size (sizes, row counts) or full (+ sha256; reads them)
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


def local_rank_of(env: Mapping[str, str]) -> int:
    """This process's index on its node: torchrun's LOCAL_RANK, else srun's SLURM_LOCALID, else 0."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = env.get(name)
        if value not in (None, ""):
            try:
                rank = int(value)
            except ValueError:
                raise ConfigError(f"{name}={value!r} is not an integer") from None
            if rank < 0:
                raise ConfigError(f"{name}={rank} is negative")
            return rank
    return 0


def choose_device(name: str, env: Mapping[str, str], cuda_count: int) -> str:
    """The device string for this rank, from the `device` option, the environment and the visible GPUs.

    auto/cuda put local rank r on cuda:r, so the 8 ranks of a node use its 8 GPUs; a task that sees
    one GPU (srun --gpus-per-task=1 narrows CUDA_VISIBLE_DEVICES) uses cuda:0; an explicit cuda:N
    or cpu is taken as given.
    """
    if name == "cpu" or (name == "auto" and cuda_count == 0):
        return "cpu"
    if name not in ("auto", "cuda"):
        if name.startswith("cuda") and cuda_count == 0:
            raise ConfigError(f"device={name} but no CUDA device is available")
        return name
    if cuda_count == 0:
        raise ConfigError("device=cuda but no CUDA device is available")
    local = local_rank_of(env)
    if cuda_count == 1:
        return "cuda:0"
    if local >= cuda_count:
        raise ConfigError(f"local rank {local} but only {cuda_count} CUDA devices are visible "
                          "(start at most one rank per GPU per node)")
    return f"cuda:{local}"


def pick_device(name: str) -> torch.device:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = torch.device(choose_device(name, os.environ, count))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def build_model(cfg: EmbedConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    if cfg.weights:
        model = load_backbone(cfg.weights, arch=cfg.arch)
        identity = {"weights": str(Path(cfg.weights).resolve()), "weights_sha256": backbone_fingerprint(cfg.weights)}
    elif cfg.random_init:
        if not cfg.arch:
            raise ConfigError("random_init=true needs --arch")
        torch.manual_seed(0)
        model = build_backbone(cfg.arch)
        identity = {"weights": None, "weights_sha256": "random-init-seed0"}
    else:
        raise ConfigError("embed needs --weights FILE (or --arch NAME random_init=true for a smoke run, "
                          "or model.kind=torchscript model.path=FILE)")
    identity.update(describe_backbone(model))
    identity.pop("config", None)
    return model.eval(), identity


def features(out: dict[str, torch.Tensor], token: str) -> torch.Tensor:
    cls = out["x_norm_clstoken"].float()
    if token == "cls":
        f = cls
    elif token == "avgpool":
        f = out["x_norm_patchtokens"].float().mean(1)
    else:
        f = torch.cat([cls, out["x_norm_patchtokens"].float().mean(1)], dim=1)
    return torch.nn.functional.normalize(f, dim=1)


@dataclass
class Embedder:
    """What the loop needs of a model: the worker transform and uint8 batch -> float32 [B, dim]."""

    transform: Callable[[bytes], torch.Tensor]
    forward: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    identity: dict[str, Any]
    source: str                   # the model file, for error lines
    bf16: bool
    normalized: bool
    extra: dict[str, Any]         # manifest keys that describe the preprocessing


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def vit_embedder(cfg: EmbedConfig, device: torch.device) -> Embedder:
    model, identity = build_model(cfg)
    patch = model.config.patch_size
    if cfg.resolution % patch:  # checked here, before the output exists: the patch size is the model's
        raise ConfigError(f"embed: resolution={cfg.resolution}: must be a positive multiple of the patch size {patch}")
    model.to(device)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")

    def forward(x: torch.Tensor) -> torch.Tensor:
        with _autocast(device, bf16):
            return features(model(normalize_batch(x)), cfg.token)

    return Embedder(EvalTransform(crop=cfg.resolution, resize=cfg.resize), forward,
                    model.config.embed_dim * (2 if cfg.token == "cls+avgpool" else 1), identity,
                    identity["weights"] or f"{cfg.arch} (random init)", bf16, True,
                    {"token": cfg.token, "resolution": cfg.resolution})


def torchscript_embedder(cfg: EmbedConfig, device: torch.device) -> Embedder:
    if cfg.weights or cfg.random_init:
        raise ConfigError("model.kind=torchscript reads model.path; drop --weights/random_init")
    pre = cfg.preprocess
    transform = ResizeCropTransform.from_config(pre)
    descriptor = TorchScriptDescriptor(cfg.model, device, probe_side=pre.fixed_size or pre.resize)
    # auto: fp32, the precision copy-detection thresholds are calibrated at; bf16 only when asked
    bf16 = cfg.precision == "bf16"

    def forward(x: torch.Tensor) -> torch.Tensor:
        with _autocast(device, bf16):
            return descriptor(normalize_with(x, pre.mean, pre.std))

    preprocess = pre.describe()
    return Embedder(transform, forward, descriptor.dim, descriptor.identity(preprocess), str(descriptor.path), bf16,
                    cfg.model.normalize, {"token": None, "resolution": pre.fixed_size, "preprocess": preprocess})


def describe_preprocess(cfg: EmbedConfig) -> str:
    if cfg.model.kind == "vit":
        return f"centre crop {cfg.resolution} (bicubic), token {cfg.token}"
    p = cfg.preprocess
    size = f"{p.resize} x {p.resize} (square)" if p.square else f"shorter side {p.resize}"
    return f"{size} {p.interpolation}, {f'centre crop {p.crop}' if p.crop else 'no crop'}"


def forward_by_shape(images: torch.Tensor | list[torch.Tensor], forward: Callable[[torch.Tensor], torch.Tensor],
                     device: torch.device) -> torch.Tensor:
    """Run `forward` on a stacked batch, or on each same-shape group of a list (no crop, no square resize)."""
    if isinstance(images, torch.Tensor):
        return forward(images.to(device, non_blocking=True))
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    out: torch.Tensor | None = None
    for idx in groups.values():
        y = forward(torch.stack([images[i] for i in idx]).to(device, non_blocking=True))
        if out is None:
            out = torch.empty(len(images), y.shape[1], dtype=y.dtype, device=y.device)
        out[torch.tensor(idx, device=y.device)] = y
    assert out is not None
    return out


def check_finite(f: torch.Tensor, keys: list[str], shard: str, source: str, bf16: bool) -> None:
    finite = torch.isfinite(f).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        hint = "; try precision=fp32" if bf16 else ""
        raise CheckpointError(f"{source}: non-finite output for key {keys[bad[0]]} of shard {shard} "
                              f"({len(bad)} of {len(keys)} in its batch){hint}")


def _commit(out: ShardedOutput, shard: str, keys: list[str], vecs: list[np.ndarray], failed: list, dim: int, total: int):
    order = np.argsort(np.array(keys, dtype=object)) if keys else np.zeros(0, dtype=int)
    keys_sorted = [keys[i] for i in order]
    matrix = np.concatenate(vecs)[order] if vecs else np.zeros((0, dim), np.float16)
    rel = f"shards/{shard}.parquet"
    tmp = out.temp(rel)
    pq.write_table(embeddings_table(keys_sorted, matrix), tmp, compression="none")
    stats = {"embedded": len(keys_sorted), "read": total, "failed": len(failed),
             "_failed_keys": [[k, e] for k, e in failed]}
    out.commit(shard, {rel: tmp}, rows=len(keys_sorted), stats=stats)


def run(cfg: EmbedConfig, resolved: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    if cfg.token not in TOKENS:
        raise ConfigError(f"token={cfg.token!r}: expected one of {', '.join(TOKENS)}")
    if cfg.verify not in ("size", "full"):
        raise ConfigError(f"verify={cfg.verify!r}: expected size or full")
    cfg.model.check()
    images = ImagesArtifact(cfg.images)
    names = images.shards
    inputs = [input_ref(cfg.images, images.manifest, role="images")]
    selection = None
    if cfg.selection:
        selection = Selection(cfg.selection)
        selection.check_shards(names, cfg.images)
        inputs.append(input_ref(cfg.selection, selection.manifest, role="selection"))
    device = pick_device(cfg.device)
    emb = torchscript_embedder(cfg, device) if cfg.model.kind == "torchscript" else vit_embedder(cfg, device)
    if cfg.model.kind == "torchscript":
        inputs.append(InputRef(path=emb.identity["path"], kind="file", fingerprint="sha256:" + emb.identity["sha256"],
                               role="descriptor"))
    elif cfg.weights:
        inputs.append(InputRef(path=emb.identity["weights"], kind="file", fingerprint="sha256:" + emb.identity["weights_sha256"], role="weights"))
    if not Path(cfg.out).exists():
        # A new output: its input shards are checked before it is created, so a damaged input leaves no
        # output behind (a resumed one checks the shards still to do, below).
        ranks = rank_info()
        verify_input(images.path, images.manifest, cfg.verify, [s for i, s in enumerate(names) if ranks.owns(i)])
        if selection is not None:
            verify_input(selection.path, selection.manifest, cfg.verify)
    out = ShardedOutput(cfg.out, kind="embeddings", stage="embed", config=resolved, inputs=inputs,
                        overwrite=overwrite, resume_ignores=("batch_size", "workers", "device", "precision", "verify"))
    dim = emb.dim
    extra = {"dim": dim, "dtype": "float16", "normalized": emb.normalized, **emb.extra,
             "images": str(Path(cfg.images).resolve()), "model": emb.identity}
    if out.already_complete:
        console.print(f"{cfg.out}: already complete, nothing to do")
        return out.manifest.stats
    todo = [s for i, s in enumerate(names) if out.owns(i) and not out.is_done(s)]
    todo_set = set(todo)
    # the input shards about to be read, against what their writers recorded (verify=full: sha256)
    verify_input(images.path, images.manifest, cfg.verify, todo)
    if selection is not None:
        verify_input(selection.path, selection.manifest, cfg.verify)
    n_items = sum((selection.rows.get(s["name"], 0) if selection else s["rows"])
                  for s in images.manifest.shards if s["name"] in todo_set)
    dataset = ShardBatches(cfg.images, todo, emb.transform, cfg.batch_size,
                           selection_path=cfg.selection if selection else None)
    loader = DataLoader(dataset, batch_size=None, num_workers=min(cfg.workers, len(todo)),
                        pin_memory=device.type == "cuda", persistent_workers=False)
    buffers: dict[str, dict[str, list]] = {}
    started, n_done, shards_done = time.perf_counter(), 0, 0
    with progress() as bar, torch.inference_mode():
        task = bar.add_task(f"embed rank {out.ranks.rank}/{out.ranks.world_size}", total=n_items, shards=len(todo))
        for batch in loader:
            buf = buffers.setdefault(batch["shard"], {"keys": [], "vecs": [], "failed": []})
            buf["failed"] += batch["failed"]
            if batch["images"] is not None:
                f = forward_by_shape(batch["images"], emb.forward, device)
                check_finite(f, batch["keys"], batch["shard"], emb.source, emb.bf16)
                buf["keys"] += batch["keys"]
                buf["vecs"].append(f.to(torch.float16).cpu().numpy())
                n_done += len(batch["keys"])
            bar.advance(task, len(batch["keys"]) + len(batch["failed"]))
            if batch["end"]:
                b = buffers.pop(batch["shard"])
                _commit(out, batch["shard"], b["keys"], b["vecs"], b["failed"], dim, batch["total"])
                shards_done += 1
                bar.update(task, shards_done=shards_done)  # without a terminal: a line per shard
    elapsed = time.perf_counter() - started

    def finalize(records):
        failed = [row for r in records for row in r.stats.get("_failed_keys", [])]
        write_parquet(pa.table({"key": [k for k, _ in failed], "error": [e for _, e in failed]},
                               schema=pa.schema([("key", pa.string()), ("error", pa.string())])),
                      out.dir / "failed.parquet")
        return {}

    finalized = out.try_finalize(names, finalize=finalize, extra=extra)
    stats = out.manifest.stats if finalized else {}
    ident = emb.identity
    name = ident.get("descriptor") or ident.get("arch") or ident.get("built_from")
    summary = {"model": f"{name} ({ident['params']:,} params)",
               "device": f"{device} {'bf16' if emb.bf16 else 'fp32'}", "dim": dim,
               "preprocess": describe_preprocess(cfg),
               "shards": f"{len(todo)} written, {len(names)} in total",
               "images/s": round(n_done / elapsed, 1) if elapsed > 0 else 0,
               "embedded": stats.get("embedded", n_done), "failed": stats.get("failed", "-"),
               "manifest": str(Path(cfg.out) / "manifest.json") if finalized else "not yet: other ranks still running"}
    print_summary(f"embed -> {cfg.out}", summary)
    return stats


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    cfg, resolved = compose_config("embed", overrides, EmbedConfig)
    return run(cfg, resolved, overwrite=overwrite)
