"""`lvd embed`: images artifact -> embeddings artifact (one output shard per image shard)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from omegaconf import MISSING
from torch.utils.data import DataLoader

from lvdtool.artifacts.embeddings import embeddings_table
from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.artifacts.manifest import InputRef, input_ref
from lvdtool.artifacts.selection import read_selection
from lvdtool.artifacts.sharded_output import ShardedOutput
from lvdtool.artifacts.tables import write_parquet
from lvdtool.config import compose_config
from lvdtool.console import console, print_summary, progress
from lvdtool.data.eval_transform import EvalTransform, normalize_batch
from lvdtool.data.shard_images import ShardBatches
from lvdtool.errors import ConfigError
from lvdtool.models import backbone_fingerprint, build_backbone, describe_backbone, load_backbone

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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available")
    return torch.device(name)


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
        raise ConfigError("embed needs --weights FILE (or --arch NAME random_init=true for a smoke run)")
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
    images = ImagesArtifact(cfg.images)
    inputs = [input_ref(cfg.images, images.manifest, role="images")]
    keys = None
    if cfg.selection:
        sel_manifest, keys = read_selection(cfg.selection)
        inputs.append(input_ref(cfg.selection, sel_manifest, role="selection"))
    model, identity = build_model(cfg)
    if cfg.weights:
        inputs.append(InputRef(path=identity["weights"], kind="file", fingerprint="sha256:" + identity["weights_sha256"], role="weights"))
    out = ShardedOutput(cfg.out, kind="embeddings", stage="embed", config=resolved, inputs=inputs,
                        overwrite=overwrite, resume_ignores=("batch_size", "workers", "device", "precision"))
    dim = model.config.embed_dim * (2 if cfg.token == "cls+avgpool" else 1)
    extra = {"dim": dim, "dtype": "float16", "normalized": True, "token": cfg.token, "resolution": cfg.resolution,
             "images": str(Path(cfg.images).resolve()), "model": identity}
    if out.already_complete:
        console.print(f"{cfg.out}: already complete, nothing to do")
        return out.manifest.stats
    device = pick_device(cfg.device)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    model.to(device)
    names = images.shards
    todo = [s for i, s in enumerate(names) if out.owns(i) and not out.is_done(s)]
    n_items = sum(s["rows"] for i, s in enumerate(images.manifest.shards) if s["name"] in set(todo))
    transform = EvalTransform(crop=cfg.resolution, resize=cfg.resize)
    dataset = ShardBatches(cfg.images, todo, transform, cfg.batch_size, keys)
    loader = DataLoader(dataset, batch_size=None, num_workers=min(cfg.workers, len(todo)),
                        pin_memory=device.type == "cuda", persistent_workers=False)
    buffers: dict[str, dict[str, list]] = {}
    started, n_done = time.perf_counter(), 0
    with progress() as bar, torch.inference_mode():
        task = bar.add_task(f"embed rank {out.ranks.rank}/{out.ranks.world_size}", total=n_items)
        for batch in loader:
            buf = buffers.setdefault(batch["shard"], {"keys": [], "vecs": [], "failed": []})
            buf["failed"] += batch["failed"]
            if batch["images"] is not None:
                x = normalize_batch(batch["images"].to(device, non_blocking=True))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    f = features(model(x), cfg.token)
                buf["keys"] += batch["keys"]
                buf["vecs"].append(f.to(torch.float16).cpu().numpy())
                n_done += len(batch["keys"])
            bar.advance(task, len(batch["keys"]) + len(batch["failed"]))
            if batch["end"]:
                b = buffers.pop(batch["shard"])
                _commit(out, batch["shard"], b["keys"], b["vecs"], b["failed"], dim, batch["total"])
    elapsed = time.perf_counter() - started

    def finalize(records):
        failed = [row for r in records for row in r.stats.get("_failed_keys", [])]
        write_parquet(pa.table({"key": [k for k, _ in failed], "error": [e for _, e in failed]},
                               schema=pa.schema([("key", pa.string()), ("error", pa.string())])),
                      out.dir / "failed.parquet")
        return {}

    finalized = out.try_finalize(names, finalize=finalize, extra=extra)
    stats = out.manifest.stats if finalized else {}
    summary = {"model": f"{identity.get('arch') or identity.get('built_from')} ({identity['params']:,} params)",
               "device": f"{device} {'bf16' if use_bf16 else 'fp32'}", "dim": dim, "token": cfg.token,
               "shards": f"{len(todo)} written, {len(names)} in total",
               "images/s": round(n_done / elapsed, 1) if elapsed > 0 else 0,
               "embedded": stats.get("embedded", n_done), "failed": stats.get("failed", "-"),
               "manifest": str(Path(cfg.out) / "manifest.json") if finalized else "not yet: other ranks still running"}
    print_summary(f"embed -> {cfg.out}", summary)
    return stats


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    cfg, resolved = compose_config("embed", overrides, EmbedConfig)
    return run(cfg, resolved, overwrite=overwrite)
