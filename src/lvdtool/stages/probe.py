"""`lvd probe`: frozen-backbone evaluation: weighted k-NN and a grid of linear classifiers.

Features are extracted once per split and cached in the report directory (`_work/`), so a rerun
of a killed probe (or a second protocol, with --overwrite) reuses them. The report directory is
guarded like every stage's output (artifacts/output_guard.py): a rerun of the same probe prints the
stored report, another config or weights is refused by key unless --overwrite.
The report (report.json, report.md, manifest.json) says which
linear protocol was used: `cached` (default; the fast variant) or `official` (the paper's
augmented protocol through the frozen backbone).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING
from torch.utils.data import DataLoader

from lvdtool.artifacts.atomic import TMP_MARK, atomic_path, atomic_write_bytes, atomic_write_json
from lvdtool.artifacts.fingerprint import comparable_fingerprint, file_fingerprint
from lvdtool.artifacts.images import ImagesArtifact
from lvdtool.artifacts.manifest import MANIFEST_NAME, InputRef, Manifest, input_ref
from lvdtool.artifacts.output_guard import OutputSpec, claim_output, describe, diff_keys, input_paths
from lvdtool.artifacts.ranks import rank_info
from lvdtool.config import compose_config
from lvdtool.config_paths import comparable_paths
from lvdtool.console import console, print_summary, progress
from lvdtool.data.eval_transform import EvalTransform, normalize_batch
from lvdtool.data.shard_images import ShardBatches
from lvdtool.errors import ArtifactError, ConfigError, InputError
from lvdtool.eval.contact_sheet import save_png
from lvdtool.eval.knn import knn_classify
from lvdtool.eval.patch_pca import patch_pca_sheet
from lvdtool.eval.feature_sets import feature_sets
from lvdtool.eval.linear_probe import train_linear_grid
from lvdtool.eval.official_linear import train_linear_official
from lvdtool.eval.metrics import markdown_table
from lvdtool.eval.probe_protocol import CACHED_LINEAR_PROTOCOL, official_linear_protocol
from lvdtool.models import describe_backbone, load_backbone
from lvdtool.stages.embed import pick_device

PROTOCOLS = ("cached", "official")


@dataclass
class KnnConfig:
    ks: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    temperature: float = 0.07


@dataclass
class LinearConfig:
    lrs: list[float] = field(default_factory=lambda: [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1])
    epochs: float = 10.0
    batch_size: int = 256
    iterations: int = 12500
    official_batch_size: int = 1024


@dataclass
class ProbeConfig:
    weights: str = MISSING
    train: str = MISSING
    val: str = MISSING
    out: str = MISSING
    arch: str | None = None
    resolution: int = 224
    resize: int | None = None
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    protocol: str = "cached"
    pca_images: int = 8  # val images in patch_pca.png (first 3 PCA components of patch features); 0: none
    knn: KnnConfig = field(default_factory=KnnConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    seed: int = 0


def _labels(art: ImagesArtifact, path: str) -> dict[str, str]:
    index = art.read_index(columns=["key", "status", "label"]).to_pylist()
    labels = {r["key"]: r["label"] for r in index if r["status"] == "ok"}
    missing = sum(1 for v in labels.values() if v is None)
    if not labels or missing == len(labels):
        raise ArtifactError(f"{path}: no labelled ok images (ingest with --label-from-dir or inputs.label_column)")
    return {k: v for k, v in labels.items() if v is not None}


def extract(model, art: ImagesArtifact, path: str, keys: set[str], cfg: ProbeConfig, device, cache: Path, what: str):
    """Features of every labelled image, cached as a torch file (float16) keyed by the model and data."""
    if cache.exists():
        data = torch.load(cache, weights_only=True)
        console.print(f"{what}: cached features from {cache}")
        return data["keys"], {k: v.float() for k, v in data["features"].items()}
    loader = DataLoader(ShardBatches(path, art.shards, EvalTransform(cfg.resolution, cfg.resize), cfg.batch_size, keys),
                        batch_size=None, num_workers=min(cfg.workers, len(art.shards)))
    out_keys: list[str] = []
    chunks: dict[str, list[torch.Tensor]] = {}
    failed = 0
    with progress() as bar, torch.inference_mode():
        task = bar.add_task(f"probe features: {what}", total=len(keys))
        for batch in loader:
            failed += len(batch["failed"])
            if batch["images"] is not None:
                x = normalize_batch(batch["images"].to(device))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    sets = feature_sets(model, x)
                for name, f in sets.items():
                    chunks.setdefault(name, []).append(f.to(torch.float16).cpu())
                out_keys += batch["keys"]
            bar.advance(task, len(batch["keys"]) + len(batch["failed"]))
    feats = {name: torch.cat(parts) for name, parts in chunks.items()}
    with atomic_path(cache) as tmp:
        torch.save({"keys": out_keys, "features": feats, "failed": failed}, tmp)
    return out_keys, {k: v.float() for k, v in feats.items()}


PCA_PICTURE = "patch_pca.png"


def write_patch_pca(model, art: ImagesArtifact, labels: dict[str, str], cfg: ProbeConfig, device, path: Path) -> str:
    """The DINOv2 figure-1 picture for a few val images of the first shard: one per label first."""
    transform = EvalTransform(cfg.resolution, cfg.resize)
    picked: dict[str, tuple[Any, str]] = {}
    spare: list[tuple[Any, str]] = []
    for sample in art.iter_shard(art.shards[0], set(labels)):
        label = labels[sample.key]
        item = (sample.data, f"{label}" if label else sample.key)
        if label not in picked:
            picked[label] = item
        elif len(spare) < cfg.pca_images:
            spare.append(item)
        if len(picked) >= cfg.pca_images:
            break
    chosen = (list(picked.values()) + spare)[: cfg.pca_images]
    images = torch.stack([transform(data) for data, _ in chosen])
    sheet = patch_pca_sheet(model, images.to(device), [c for _, c in chosen],
                            title="first 3 PCA components of the patch features (as RGB)")
    save_png(sheet, path)
    return str(path)


# Keys that do not change the report: a rerun may use other ones.
RESUME_IGNORES = ("workers", "batch_size", "device")
_REPORT_FILES = ("_work", "report.json", "report.md", PCA_PICTURE)


def _early_entry(name: str) -> bool:
    """What a probe wrote before its manifest (probes of older lvd versions wrote it last)."""
    return any(name == f or name.startswith(f + TMP_MARK) for f in (*_REPORT_FILES, MANIFEST_NAME))


def _identity(config: dict[str, Any], inputs: list[InputRef]) -> dict[str, Any]:
    cfg = {k: v for k, v in comparable_paths("probe", config).items() if k not in RESUME_IGNORES}
    return {"config": cfg, "inputs": {i.role: [i.path, comparable_fingerprint(i.fingerprint)] for i in inputs}}


def _check_labels(cfg: ProbeConfig, val_labels: dict[str, str], classes: dict[str, int]) -> None:
    if any(v in classes for v in val_labels.values()):
        return
    val_names = sorted(set(val_labels.values()))
    raise InputError(
        f"{cfg.val}: none of its {len(val_labels)} labelled images has a label that occurs in {cfg.train} "
        f"(val labels: {', '.join(val_names[:3])}{', ...' if len(val_names) > 3 else ''}; train labels: "
        f"{', '.join(sorted(classes)[:3])}{', ...' if len(classes) > 3 else ''}); probe with a val split of the train classes"
    )


def _summary(report: dict[str, Any], out: Path) -> dict[str, Any]:
    best, protocol = report["linear"]["best"], report["linear"]["protocol"]
    summary: dict[str, Any] = {f"k-NN top-1 (k={k})": round(v["top1"], 2) for k, v in report["knn"].items()}
    summary.update({"linear protocol": protocol["name"], "linear best": f"{best['features']} lr={best['lr']:g}",
                    "linear top-1": round(best["top1"], 2), "report": str(out / "report.md")})
    if "patch_pca" in report:
        summary["patch PCA picture"] = report["patch_pca"]
    return summary


def run(cfg: ProbeConfig, resolved: dict[str, Any], overwrite: bool = False) -> dict[str, Any]:
    """Probe into `cfg.out`, a `report` artifact of stage probe. A rerun with the same config and
    inputs prints the stored report (nothing is recomputed); another config, weights or data is
    refused by key unless `overwrite`, which deletes the earlier report (keeping the cached
    features of these weights and data, which it reuses)."""
    if cfg.protocol not in PROTOCOLS:
        raise ConfigError(f"protocol={cfg.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if cfg.pca_images < 0:
        raise ConfigError(f"pca_images={cfg.pca_images}: must be >= 0 (0: no patch_pca.png)")
    out = Path(cfg.out)
    train_art, val_art = ImagesArtifact(cfg.train), ImagesArtifact(cfg.val)
    train_labels, val_labels = _labels(train_art, cfg.train), _labels(val_art, cfg.val)
    classes = {c: i for i, c in enumerate(sorted(set(train_labels.values())))}
    _check_labels(cfg, val_labels, classes)
    weights_fp = file_fingerprint(cfg.weights)
    inputs = [input_ref(cfg.train, train_art.manifest, "train"), input_ref(cfg.val, val_art.manifest, "val"),
              InputRef(str(Path(cfg.weights).resolve()), "file", weights_fp, "weights")]
    tag = f"{weights_fp.split(':')[1][:12]}-r{cfg.resolution}-{cfg.resize or 'auto'}"
    caches = {"train": f"_work/train-{train_art.manifest.fingerprint[7:19]}-{tag}.pt",
              "val": f"_work/val-{val_art.manifest.fingerprint[7:19]}-{tag}.pt"}
    spec = OutputSpec(out, "report", "probe", noun="report", early=_early_entry)
    lock, old = claim_output(spec, inputs=input_paths("probe", resolved, inputs), run_id=rank_info().run_id,
                             overwrite=overwrite, keep=caches.values())
    try:
        if old is not None:
            keys = diff_keys(_identity(old.config, old.inputs), _identity(resolved, inputs))
            if keys:
                raise ConfigError(
                    f"{out}: holds a probe report of another config or inputs (differs at: {', '.join(keys[:5])}); "
                    f"choose another --out, or pass --overwrite to delete it ({describe(spec, old)})")
            if old.complete and (out / "report.json").is_file():
                report = json.loads((out / "report.json").read_text())
                console.print(f"{cfg.out}: already complete (same weights, data and config): the stored report",
                              soft_wrap=True, markup=False)
                print_summary(f"probe -> {cfg.out}", _summary(report, out))
                return report
        # the report's identity is recorded before any work, so a rerun of a killed probe is checked too
        Manifest(kind="report", stage="probe", config=resolved, inputs=inputs).write(out)
        return _probe(cfg, resolved, out, inputs, train_art, val_art, train_labels, val_labels, classes, caches)
    finally:
        lock.release()


def _probe(cfg: ProbeConfig, resolved: dict[str, Any], out: Path, inputs: list[InputRef], train_art: ImagesArtifact,
           val_art: ImagesArtifact, train_labels: dict[str, str], val_labels: dict[str, str], classes: dict[str, int],
           caches: dict[str, str]) -> dict[str, Any]:
    unseen = {k for k, v in val_labels.items() if v not in classes}
    if unseen:
        console.print(f"[yellow]{len(unseen)} val images have labels absent from train; they are left out and counted")
    val_labels = {k: v for k, v in val_labels.items() if k not in unseen}
    model = load_backbone(cfg.weights, arch=cfg.arch).eval()
    device = pick_device(cfg.device)
    model.to(device)
    weights_fp = inputs[2].fingerprint
    started = time.perf_counter()
    tr_keys, tr_sets = extract(model, train_art, cfg.train, set(train_labels), cfg, device, out / caches["train"], "train")
    va_keys, va_sets = extract(model, val_art, cfg.val, set(val_labels), cfg, device, out / caches["val"], "val")
    tr_y = torch.tensor([classes[train_labels[k]] for k in tr_keys])
    va_y = torch.tensor([classes[val_labels[k]] for k in va_keys])
    knn = knn_classify(tr_sets["cls1"], tr_y, va_sets["cls1"], va_y, ks=cfg.knn.ks, temperature=cfg.knn.temperature,
                       num_classes=len(classes), device=device)
    if cfg.protocol == "cached":
        result = train_linear_grid(tr_sets, tr_y, va_sets, va_y, len(classes), lrs=cfg.linear.lrs, epochs=cfg.linear.epochs,
                                   batch_size=cfg.linear.batch_size, seed=cfg.seed, device=device)
        table, best, protocol = result.table, result.best, CACHED_LINEAR_PROTOCOL.as_dict()
        protocol.update(iterations=result.iterations, batch_size=result.batch_size)
    else:
        class_of = {k: classes[v] for k, v in train_labels.items()}
        table, best = train_linear_official(
            model, cfg.train, train_art.shards, class_of, len(classes), va_sets, va_y, lrs=cfg.linear.lrs,
            iterations=cfg.linear.iterations, batch_size=cfg.linear.official_batch_size, resolution=cfg.resolution,
            workers=cfg.workers, seed=cfg.seed, device=device)
        protocol = official_linear_protocol(cfg.resolution, cfg.resize).as_dict()
        protocol.update(iterations=cfg.linear.iterations, batch_size=cfg.linear.official_batch_size)
    identity = describe_backbone(model)
    identity.pop("config", None)
    report = {
        "model": {**identity, "weights": str(Path(cfg.weights).resolve()), "weights_fingerprint": weights_fp},
        "data": {"train_images": len(tr_keys), "val_images": len(va_keys), "classes": len(classes),
                 "val_unseen_labels_left_out": len(unseen)},
        "knn": {str(k): v for k, v in knn.items()},
        "linear": {"protocol": protocol, "best": best, "grid": table},
        "seconds": round(time.perf_counter() - started, 1),
    }
    md = [f"# Probe report: {Path(cfg.weights).name}", "",
          f"Model: {identity.get('arch') or identity.get('built_from')} ({identity['params']:,} parameters), "
          f"{report['data']['train_images']} train / {report['data']['val_images']} val images, {len(classes)} classes.", "",
          "## Weighted k-NN (CLS, cosine, T = %.2f)" % cfg.knn.temperature, "",
          markdown_table([{"k": k, "top1": v["top1"], "top5": v["top5"]} for k, v in knn.items()], ["k", "top1", "top5"],
                         {"top1": ".2f", "top5": ".2f"}), "",
          f"## Linear probe: protocol `{protocol['name']}`", "",
          f"{protocol['augmentation']}; {protocol['optimizer']}; {protocol['schedule']}; "
          f"{protocol['iterations']} iterations at batch {protocol['batch_size']}. "
          "The best classifier is chosen on the validation set, as the paper does (optimistic).", "",
          f"Best: `{best['features']}` at lr {best['lr']:g}: top-1 {best['top1']:.2f}, top-5 {best['top5']:.2f}.", "",
          markdown_table(table, ["features", "lr", "top1", "top5"], {"top1": ".2f", "top5": ".2f", "lr": "g"}), ""]
    if cfg.pca_images > 0:
        report["patch_pca"] = write_patch_pca(model, val_art, val_labels, cfg, device, out / PCA_PICTURE)
        md += ["## What the patch features separate", "",
               f"![patch PCA]({PCA_PICTURE}): each image next to the first three PCA components of its patch "
               "features (one PCA over all shown images) as RGB.", ""]
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    Manifest(kind="report", stage="probe", config=resolved, inputs=inputs, complete=True,
             shards=[{"name": "report", "rows": 1, "checksum": file_fingerprint(out / "report.json")}],
             stats={"knn_top1": {str(k): v["top1"] for k, v in knn.items()}, "linear_best_top1": best["top1"]}).write(out)
    print_summary(f"probe -> {cfg.out}", _summary(report, out))
    return report


def main(overrides: list[str], overwrite: bool = False) -> dict[str, Any]:
    cfg, resolved = compose_config("probe", overrides, ProbeConfig)
    return run(cfg, resolved, overwrite=overwrite)
