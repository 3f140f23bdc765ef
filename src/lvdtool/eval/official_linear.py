"""The paper's linear protocol: augmented crops through the frozen backbone, every classifier at once."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader

from lvdtool.console import progress
from lvdtool.data.eval_transform import normalize_batch
from lvdtool.data.shard_images import ShardBatches
from lvdtool.data.train_transform import RandomResizedCropFlip
from lvdtool.eval.feature_sets import feature_sets
from lvdtool.eval.linear_probe import GridSGD, LinearGridHead, evaluate_linear_grid, grid_cross_entropy
from lvdtool.eval.probe_optim import cosine_lr_factor


def train_linear_official(
    model: torch.nn.Module,
    images_path: str | Path,
    shards: Sequence[str],
    class_of: dict[str, int],
    num_classes: int,
    val_sets: dict[str, torch.Tensor],
    val_labels: torch.Tensor,
    *,
    lrs: Sequence[float],
    iterations: int,
    batch_size: int,
    resolution: int = 224,
    workers: int = 2,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train on random-resized crops + flips of the images in `class_of` (key -> class index) for
    `iterations` batches (passes over the shards repeat with new crops), score on cached `val_sets`.
    Returns (one row per feature set and lr, the best row by val top-1)."""
    dims = {k: v.shape[1] for k, v in val_sets.items()}
    head = LinearGridHead(dims, num_classes, lrs, seed=seed).to(device)
    scale = batch_size / 256  # the paper's lr scaling rule
    opt = GridSGD(head.parameters(), [lr * scale for lr in lrs], momentum=0.9)
    keys = set(class_of)
    it, epoch = 0, 0
    with progress() as bar:
        task = bar.add_task("probe linear (official protocol)", total=iterations)
        while it < iterations:
            transform = RandomResizedCropFlip(resolution, seed=seed * 7919 + epoch)
            loader = DataLoader(ShardBatches(images_path, list(shards), transform, batch_size, keys),
                                batch_size=None, num_workers=min(workers, len(shards)))
            for batch in loader:
                if it >= iterations:
                    break
                if batch["images"] is None:
                    continue
                x = normalize_batch(batch["images"].to(device))
                y = torch.tensor([class_of[k] for k in batch["keys"]], device=device)
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    sets = feature_sets(model, x)
                for group in opt.param_groups:
                    group["lr"] = cosine_lr_factor(it, iterations)
                loss = grid_cross_entropy(head({k: v.float() for k, v in sets.items()}), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                it += 1
                bar.advance(task)
            epoch += 1
    acc = evaluate_linear_grid(head, {k: v.to(device) for k, v in val_sets.items()}, val_labels.to(device))
    table = [
        {"features": name, "lr": lr, "lr_scaled": lr * scale, "top1": float(acc[name][1][i]), "top5": float(acc[name][5][i])}
        for name in head.feature_names
        for i, lr in enumerate(lrs)
    ]
    return table, max(table, key=lambda r: r["top1"])
